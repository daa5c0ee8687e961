"""The whole loop under load: chat through the gateway to the trainer's dataset, and a burst.

The gateway answers from a stub upstream and the judge scores with a stub endpoint; every
consumer is real (ingest, judge, hitl with auto-accept, trainer), each its own process on the
embedded broker (see bench/pipeline_stack.py). Interactions are counted where the pipeline
ends: the trainer's `raftloop_trainer_examples_total{outcome="added"}`. Three phases:

* probe: `BENCH_PIPELINE_PROBE` chats as fast as the gateway takes them (closed loop); the
  pipeline's rate is that many over the time until the trainer has them all;
* sustained: chats at a steady rate (`BENCH_PIPELINE_RATE`, default 90% of the probe's rate,
  capped at the 1,000/s target) for `BENCH_PIPELINE_SECONDS`; the figure is the trainer's rate
  over the window (less a short fill) and how soon after the window it has every interaction;
* burst: 10x the sustained rate for `BENCH_PIPELINE_BURST_SECONDS`, produced straight onto
  chat.completed (the gateway's own events, as it would capture them), then the time until
  every consumer group's committed lag (`raftloop_core.ops.group_status`, which reads end
  offsets from the fetch high-water mark) is 0 and the trainer has every example.

A sampler reads every group's committed offsets once a second; a stage's capacity is what its
group processed per second while its input had a backlog, and the slowest such stage is the
bottleneck. The load generator, the stub and the broker share the machine's cores with the
services, so the load average at the start is part of the figures.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.pipeline_load import produce_burst, send_chats
from bench.pipeline_stack import Stack, enable_auto_accept, start_stack
from bench.pipeline_watch import STAGES, Sample, Sampler

TITLE = "Pipeline: sustained interactions/s from chat to the trainer's dataset, burst drain"
TARGET_RATE = 1_000
TARGET_DRAIN_S = 120
BURST_FACTOR = 10
WARMUP = 20


def knob(name: str, default: float) -> float:
    """A `BENCH_PIPELINE_<name>` setting (short runs while developing)."""
    return float(os.environ.get(f"BENCH_PIPELINE_{name}", default))


Figures = dict[str, float | int | str]


def caught_up(expected: int) -> Callable[[Sample], bool]:
    """The trainer has `expected` examples and no consumer group lags."""
    return lambda s: s.added >= expected and not any(s.lag.values())


def drain_timeout() -> float:
    """How long a phase may take to drain before the run gives up."""
    return knob("DRAIN_TIMEOUT_S", 900)


def warm_up(stack: Stack, sampler: Sampler) -> None:
    """A few chats end to end: every stage works and auto-accept routes them to the trainer.

    Raises:
        RuntimeError: they did not reach the dataset (hitl's queue says whether humans got them).
    """
    asyncio.run(send_chats(stack, WARMUP, rate=None, concurrency=4))
    try:
        sampler.wait("warm-up", lambda s: s.added >= WARMUP, timeout_s=180)
    except TimeoutError as exc:
        queue = httpx.get(f"{stack.urls['hitl']}/api/v1/queue", headers=stack.auth("admin"))
        raise RuntimeError(f"{exc}\nhitl queue (open items wait for humans): {queue.text}") from exc


def probe(stack: Stack, sampler: Sampler, count: int, concurrency: int) -> tuple[float, Figures]:
    """`count` chats as fast as the gateway takes them: its rate, and the rate to the dataset."""
    base, start = sampler.last.added, time.monotonic()
    load = asyncio.run(send_chats(stack, count, rate=None, concurrency=concurrency))
    done = sampler.wait("probe", caught_up(base + load.ok), drain_timeout())
    rate = load.ok / (done - start)
    return rate, {
        "probe_chats": count,
        "probe_gateway_requests_per_s": round(load.ok / load.seconds, 1),
        "probe_interactions_per_s": round(rate, 1),
        "probe_gateway_errors": load.errors,
    }


def sustained(
    stack: Stack, sampler: Sampler, rate: float, seconds: float, concurrency: int
) -> tuple[float, Figures]:
    """Chats at `rate` for `seconds`: the rate at which they reach the dataset, and the lag."""
    base, start = sampler.last.added, time.monotonic()
    load = asyncio.run(send_chats(stack, int(rate * seconds), rate=rate, concurrency=concurrency))
    end, at_end = time.monotonic(), sampler.last
    done = sampler.wait("sustained", caught_up(base + load.ok), drain_timeout())
    fill = min(10.0, seconds / 4)  # the first interactions take a few seconds to get through
    window = [s for s in sampler.samples if start + fill <= s.t <= end]
    if len(window) >= 2 and window[-1].t - window[0].t >= 2:
        achieved = (window[-1].added - window[0].added) / (window[-1].t - window[0].t)
    else:
        achieved = load.ok / (done - start)
    return achieved, {
        "sustained_offered_per_s": round(rate, 1),
        "sustained_seconds": round(load.seconds, 1),
        "sustained_concurrency": concurrency,
        "sustained_gateway_requests_per_s": round(load.ok / load.seconds, 1),
        "sustained_gateway_errors": load.errors,
        "sustained_interactions_per_s": round(achieved, 1),
        "sustained_lag_at_window_end": sum(at_end.lag.values()),
        "sustained_catch_up_s_after_window": round(max(0.0, done - end), 1),
    }


def burst(stack: Stack, sampler: Sampler, rate: float, seconds: float) -> Figures:
    """10x `rate` for `seconds` onto chat.completed; seconds until every group's lag is 0."""
    count = int(BURST_FACTOR * rate * seconds)
    base, start = sampler.last.added, time.monotonic()
    produced_s = asyncio.run(produce_burst(stack, count, seconds))
    end = time.monotonic()
    done = sampler.wait("burst", caught_up(base + count), drain_timeout())
    during = [s for s in sampler.samples if start <= s.t <= done]
    out: Figures = {
        "burst_events": count,
        "burst_seconds": round(produced_s, 1),
        "burst_drain_s": round(done - end, 1),
    }
    for stage, (group, _) in STAGES.items():
        out[f"burst_peak_lag_{stage}"] = max(s.lag.get(group, 0) for s in during)
    return out


def capacity_figures(sampler: Sampler, cpu: Figures) -> Figures:
    """Each stage's processed/s while backlogged, and the bottleneck.

    The bottleneck is the slowest stage that had a backlog; if none had one, the stage that
    spent the most CPU per interaction (on a machine this small, CPU is what runs out).
    """
    caps = sampler.capacities()
    out: Figures = {
        f"capacity_{stage}_per_s": caps.get(stage, "never backlogged") for stage in STAGES
    }
    if caps:
        out["bottleneck"] = min(caps, key=lambda stage: caps[stage])
    else:
        costs = {stage: float(cpu[f"cpu_ms_per_interaction_{stage}"]) for stage in STAGES}
        out["bottleneck"] = max(costs, key=lambda stage: costs[stage])
    return out


def cpu_figures(before: dict[str, float], after: dict[str, float], count: int) -> Figures:
    """CPU milliseconds each process spent per interaction that reached the dataset."""
    return {
        f"cpu_ms_per_interaction_{name}": round(1000 * (after[name] - before[name]) / count, 1)
        for name in after
    }


def measure(stack: Stack) -> Figures:
    """Warm up, probe, sustain, burst; the figures of all three."""
    concurrency = int(knob("CONCURRENCY", 128))
    enable_auto_accept(stack)
    sampler = Sampler(stack).start()
    try:
        warm_up(stack, sampler)
        base, cpu_before = sampler.last.added, stack.cpu_seconds() | {"bench": time.process_time()}
        probe_rate, out = probe(stack, sampler, int(knob("PROBE", 200)), concurrency)
        rate = knob("RATE", 0) or min(TARGET_RATE, 0.9 * probe_rate)
        achieved, figures = sustained(stack, sampler, rate, knob("SECONDS", 60), concurrency)
        out |= figures | burst(stack, sampler, achieved, knob("BURST_SECONDS", 5))
        count = sampler.last.added - base
        cpu = cpu_figures(cpu_before, stack.cpu_seconds() | {"bench": time.process_time()}, count)
    finally:
        sampler.stop()
    out |= cpu | capacity_figures(sampler, cpu)
    return out | {"dataset_examples_at_end": sampler.last.added, "sampler_misses": sampler.failures}


JUDGE_COSTS = (
    "Where the judge's time goes: per interaction it sends one request per applicable rubric "
    "(4 with the bundled rubrics and no retrieved context) through the openai client, now "
    "the largest share; it embeds a polled batch's texts with MiniLM in one call (about 4 ms of "
    "CPU per short text, against 19 ms one text at a time, measured on this machine outside "
    "the pipeline), and a batch of curated examples' questions in one more; it matches each "
    "question against its tenant's newest 5,000 references, kept in memory as one float32 "
    "matrix and re-read from the store only when the tenant's row count moved. Before that "
    "matrix, reloading and JSON-decoding the references cost about 1.2 s of CPU per "
    "interaction at 5,000 references, growing with the dataset (`dataset_examples_at_end`). "
    "What would lift the ceiling next: fewer requests per interaction (every rubric in one "
    "request), or judge replicas on more cores (they share the references through the store)."
)


def notes(figures: Figures) -> str:
    """What the figures say: targets met or not, the slowest stage, what shared the cores."""
    rate, drain = figures["sustained_interactions_per_s"], figures["burst_drain_s"]
    costs = ", ".join(
        f"{key.removeprefix('cpu_ms_per_interaction_')} {value} ms"
        for key, value in figures.items()
        if key.startswith("cpu_ms_per_interaction_")
    )
    met = float(rate) >= TARGET_RATE and float(drain) <= TARGET_DRAIN_S
    text = [
        f"{'Targets met' if met else 'Short of the targets'}: {rate} interactions/s sustained "
        f"(target {TARGET_RATE:,}), burst drained in {drain} s (target {TARGET_DRAIN_S} s). "
        f"The slowest stage while backlogged is `{figures['bottleneck']}`. CPU per "
        f"interaction that reached the dataset, by process: {costs}.",
        f"The load average was {figures['loadavg_1m_at_start']} at the start and "
        f"{figures['loadavg_1m_at_end']} at the end on {figures['cpu_count']} cores: the "
        "load generator, the stub, the broker and any other work on the machine share the "
        "cores with the services, so an idle machine gives higher rates."
        + (
            f" {os.environ['BENCH_PIPELINE_NOTE']}" if os.environ.get("BENCH_PIPELINE_NOTE") else ""
        ),
    ]
    if figures["bottleneck"] == "judge":
        text.append(JUDGE_COSTS)
    return "\n\n".join(text)


def run() -> Figures:
    """Start the platform, measure, stop it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out: Figures = {
        "cpu_count": os.cpu_count() or 0,
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "target": f">= {TARGET_RATE} interactions/s sustained, burst drained in "
        f"<= {TARGET_DRAIN_S} s (2 cores)",
    }
    folder = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    stack = start_stack(folder)
    try:
        out |= measure(stack)
    finally:
        stack.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(folder, ignore_errors=True)
    out["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return out


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value}")
