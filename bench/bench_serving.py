"""Serving on CPU: the continuous-batching engine vs the old one-at-a-time backend (#16).

Both run SmolLM2-135M-Instruct in a real gateway process (`uvicorn --factory`), called with the
real `openai` AsyncOpenAI client, streaming. The old path is commit 2eb03cf's gateway package
(its `local.py` generates one request at a time) with its own raftloop_core, checked out with
`git worktree` and put first on PYTHONPATH; the engine is this tree's gateway. Capture is off
(GATEWAY_CAPTURE=false: no broker is needed, and capture costs both paths the same) and there
is no rag service: each request already carries a demo-sized RAFT prompt, built as the gateway
builds it (`with_raft_documents`) from two 128-token rag chunks of the demo handbook (the
oracle chunk and its largest neighbour, as rag's chunker cuts them) and one demo question.

Load: closed loop, N clients each sending requests back to back until 2 x N (at least 4) are
done, at N = 1, 4, 8 and 16; greedy, `max_tokens` 64. The gateway has no `ignore_eos`, so the
questions are ones whose greedy answer runs to 64 tokens (found with `--screen`); the mean
completion length is reported to show it held. Then, on the engine at N = 8, 2 x N requests
three ways: every row on the base model ("single", the issue's single-adapter batch), rows
round-robin over 4 LoRA adapters ("mixed4"), and every row on one adapter ("one_adapter"), which
separates what LoRA itself costs from what mixing adapters costs. The adapters are random (r=8,
q_proj and v_proj, B ~ N(0, 0.01)): they change some answers (reported) and a few end early.

Sizing: the old path serves one request at a time (4-14 s each here, by load), so its N = 16
level alone is 32 requests in a row; it is about half the run, which took 18-25 minutes on two
cores at a load average of 4-15 from other test runs (estimated 10-15 minutes on quiet cores).
BENCH_SERVING_QUICK=1 runs N = 1 and 4 only (the adapter runs at N = 4), for development. Each
gateway gets OMP_WAIT_POLICY=PASSIVE unless the caller set one, as make and the new gateway do.
Last, the engine again with GATEWAY_MODEL_DTYPE=bfloat16 at N = 1 and 8: on CPUs with AMX or
AVX-512 BF16 prefill is several times faster, which is what time to first token waits on.
Targets from the issue, reported, never asserted: engine tokens/s at N = 8 >= 3x N = 1; mixed
adapters >= 0.8x the single-adapter batch; engine p50 time to first token <= 2 s at N = 8.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TITLE = "Serving: continuous-batching engine vs one-at-a-time backend (SmolLM2, CPU, RAFT)"
HERE = Path(__file__).parent
REPO = HERE.parent
OLD_COMMIT = "2eb03cf"
MAX_TOKENS = 64
ADAPTERS = 4
CHUNK_TOKENS = 128
# Demo questions whose greedy SmolLM2 answer to their RAFT prompt runs to 64 tokens, found with
# `python -m bench.bench_serving --screen` (the model has no ignore_eos through the gateway).
QUESTIONS = (
    "q0001", "q0019", "q0040", "q0073", "q0094", "q0100", "q0109", "q0124",
    "q0139", "q0151", "q0196", "q0220", "q0223", "q0229", "q0241", "q0250",
)  # fmt: skip


def _quick() -> bool:
    return os.environ.get("BENCH_SERVING_QUICK", "") not in ("", "0")


# ---------------------------------------------------------------- prompts and adapters


def _rag_chunks() -> dict[str, list[str]]:
    """Each demo document cut as rag cuts it (128 embedding-model tokens, 32 overlap)."""
    import raftloop_demo_kb as kb
    from tokenizers import Tokenizer

    from raftloop_rag.chunking import ChunkingPolicy, chunk_text
    from raftloop_rag.settings import RagSettings

    tokenizer = Tokenizer.from_file(str(Path(RagSettings().model_path()) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def count(texts: Any) -> list[int]:
        return [len(e.ids) for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    policy = ChunkingPolicy(max_tokens=CHUNK_TOKENS, overlap_tokens=32)
    return {
        doc.name: [
            c.text
            for c in chunk_text(
                kb.document_text(doc.name), title=doc.title, count=count, policy=policy
            )
        ]
        for doc in kb.documents()
    }


def _messages(question_ids: tuple[str, ...] | None = None) -> dict[str, list[dict[str, str]]]:
    """Chat messages per question id: the RAFT turn the gateway would build from rag's chunks."""
    import raftloop_demo_kb as kb

    from raftloop_core.events import ChatMessage, RetrievedChunk
    from raftloop_gateway.domain import with_raft_documents

    chunks = _rag_chunks()
    out = {}
    for q in kb.questions():
        if question_ids is not None and q.id not in question_ids:
            continue
        texts = chunks[q.document]
        oracle = next(t for t in texts if " ".join(q.passage.split()) in " ".join(t.split()))
        other = max((t for t in texts if t != oracle), key=len)
        title = kb.document(q.document).title
        retrieved = [
            RetrievedChunk(
                chunk_id=f"{q.document}#{i}", document_id=q.document, text=t, score=1.0, title=title
            )
            for i, t in enumerate((oracle, other))
        ]
        turns = with_raft_documents([ChatMessage(role="user", content=q.question)], retrieved)
        out[q.id] = [{"role": m.role, "content": m.content} for m in turns]
    return out


def _write_adapters(model_dir: Path, root: Path, count: int) -> list[Path]:
    """Small random LoRA adapters (r=8 on q_proj and v_proj) whose B weights are non-zero."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    folders = []
    for i in range(count):
        torch.manual_seed(100 + i)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        peft = get_peft_model(
            model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
        )
        with torch.no_grad():
            for name, param in peft.named_parameters():
                if "lora_B" in name:  # peft starts B at zero, which would change nothing
                    param.normal_(0.0, 0.01)
        folder = root / f"lora-{i}"
        peft.save_pretrained(str(folder), safe_serialization=True)
        folders.append(folder)
    return folders


# ---------------------------------------------------------------- gateway processes


@dataclass
class _Gateway:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _start_gateway(
    folder: Path,
    model_dir: Path,
    data_dir: Path,
    pythonpath: str | None,
    extra: dict[str, str] | None = None,
) -> _Gateway:
    import httpx

    from raftloop_core.embedded import free_port

    port = free_port()
    env = (
        os.environ
        | {
            "RAFTLOOP_DATA_DIR": str(data_dir),
            "RAFTLOOP_LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # As make and the new gateway's main set it (f2e5536); the old gateway predates that, so
            # without it here the old path alone would spin OpenMP threads on a shared machine.
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
            # Nothing listens here: capture is off, and no other session's broker is reached.
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "GATEWAY_CAPTURE": "false",
            "GATEWAY_BASE_MODEL_PATH": str(model_dir),
            "GATEWAY_MAX_TOKENS_LIMIT": str(MAX_TOKENS),
            "GATEWAY_MAX_QUEUE": "64",
            "GATEWAY_ALIAS_POLL_S": "600",
        }
        | (extra or {})
    )
    env.pop("GATEWAY_RAG_URL", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    log = folder / f"gateway-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "raftloop_gateway.main:build",
             "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
             "--log-level", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=folder,
        )  # fmt: skip
    gateway = _Gateway(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{gateway.url}/readyz", timeout=2).status_code == 200:
                return gateway
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    gateway.stop()
    raise RuntimeError(f"gateway not ready in 300 s: {log.read_text(errors='replace')[-2000:]}")


# ---------------------------------------------------------------- load


@dataclass
class _Sample:
    ttft_s: float
    latency_s: float
    prompt_tokens: int
    completion_tokens: int
    text: str


async def _one(client: Any, model: str, messages: list[dict[str, str]]) -> _Sample:
    start = time.perf_counter()
    first: float | None = None
    usage = None
    text = []
    stream = await client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    end = time.perf_counter()
    if usage is None or first is None:
        raise RuntimeError(f"{model}: a stream without content or usage")
    return _Sample(
        first - start, end - start, usage.prompt_tokens, usage.completion_tokens, "".join(text)
    )


async def _closed_loop(
    url: str, key: str, work: list[tuple[str, list[dict[str, str]]]], concurrency: int
) -> tuple[list[_Sample], float]:
    """`concurrency` clients take (model, messages) items off one queue until it is empty.

    Returns the samples in the order of `work`, and the wall time from first send to last end.
    """
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=900)
    queue = list(reversed(range(len(work))))
    samples: dict[int, _Sample] = {}

    async def worker() -> None:
        while queue:
            i = queue.pop()
            samples[i] = await _one(client, *work[i])

    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - begin
    await client.close()
    return [samples[i] for i in range(len(work))], wall


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _measure(
    label: str, url: str, key: str, work: list[tuple[str, list[dict[str, str]]]], n: int
) -> tuple[dict[str, float], list[str]]:
    """Run `work` with n clients; print and return the figures, and each answer's text."""
    samples, wall = asyncio.run(_closed_loop(url, key, work, n))
    ttft = [s.ttft_s for s in samples]
    tokens = sum(s.completion_tokens for s in samples)
    figures = {
        "tokens_per_s": round(tokens / wall, 2),
        "ttft_p50_s": round(_quantile(ttft, 0.5), 2),
        "ttft_p99_s": round(_quantile(ttft, 0.99), 2),
        "latency_p50_s": round(_quantile([s.latency_s for s in samples], 0.5), 2),
        "completion_tokens_mean": round(tokens / len(samples), 1),
        "prompt_tokens_mean": round(sum(s.prompt_tokens for s in samples) / len(samples), 1),
    }
    print(
        f"   {label} c{n}: {len(samples)} requests in {wall:.1f} s, "
        f"{figures['tokens_per_s']} tok/s, ttft p50 {figures['ttft_p50_s']} s "
        f"p99 {figures['ttft_p99_s']} s, latency p50 {figures['latency_p50_s']} s, "
        f"{figures['completion_tokens_mean']} tokens/answer, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    return figures, [s.text for s in samples]


# ---------------------------------------------------------------- the run

PER_LEVEL = ("tokens_per_s", "ttft_p50_s", "ttft_p99_s", "latency_p50_s")


def _sweep(
    name: str, gw: _Gateway, key: str, model: str, prompts: list[Any], levels: tuple[int, ...]
) -> dict[str, float]:
    """Warm up, then each concurrency level; figures named `<name>_c<N>_<figure>`."""
    _measure(f"{name} warm-up", gw.url, key, [(model, prompts[0])], 1)
    out: dict[str, float] = {}
    means: dict[str, list[float]] = {"prompt_tokens_mean": [], "completion_tokens_mean": []}
    for n in levels:
        work = [(model, prompts[i % len(prompts)]) for i in range(max(4, 2 * n))]
        figures, _ = _measure(name, gw.url, key, work, n)
        out |= {f"{name}_c{n}_{k}": figures[k] for k in PER_LEVEL}
        for k, values in means.items():
            values.append(figures[k])
    out |= {f"{name}_{k}": round(sum(v) / len(v), 1) for k, v in means.items()}
    c1 = out[f"{name}_c1_tokens_per_s"]
    for n in levels[1:]:
        out[f"{name}_c{n}_vs_c1_speedup"] = round(out[f"{name}_c{n}_tokens_per_s"] / c1, 2)
    return out


def _mixed(
    gw: _Gateway, key: str, base: str, adapters: list[str], prompts: list[Any], n: int
) -> dict[str, float | str]:
    """At concurrency n: every row on the base, rows round-robin over the adapters, one adapter."""
    _measure("adapters warm-up", gw.url, key, [(a, prompts[0]) for a in adapters], len(adapters))
    mixed = f"mixed{len(adapters)}"
    runs = {"single": [base], mixed: adapters, "one_adapter": adapters[:1]}
    out: dict[str, float | str] = {}
    answers = {}
    for label, models in runs.items():
        work = [(models[i % len(models)], prompts[i % len(prompts)]) for i in range(2 * n)]
        figures, answers[label] = _measure(label, gw.url, key, work, n)
        for k in ("tokens_per_s", "ttft_p50_s", "completion_tokens_mean"):
            out[f"{label}_c{n}_{k}"] = figures[k]
    # The same prompts in the same order: an adapter that changed nothing would be no test.
    changed = sum(a != b for a, b in zip(answers[mixed], answers["single"], strict=True))
    out[f"{mixed}_c{n}_answers_unlike_base"] = f"{changed} of {len(answers[mixed])}"
    tps = {label: float(out[f"{label}_c{n}_tokens_per_s"]) for label in runs}
    out[f"{mixed}_vs_single_c{n}"] = round(tps[mixed] / tps["single"], 3)
    out[f"{mixed}_vs_one_adapter_c{n}"] = round(tps[mixed] / tps["one_adapter"], 3)
    return out


@contextmanager
def _old_gateway_path(tmp: Path) -> Iterator[str]:
    """Commit OLD_COMMIT checked out with `git worktree`; yields a PYTHONPATH for its gateway.

    Its own raftloop_core and raftloop_models come first too: the libs have changed since.
    """
    folder = tmp / "old"
    git = ["git", "-C", str(REPO), "worktree"]
    subprocess.run([*git, "add", "--detach", "--quiet", str(folder), OLD_COMMIT], check=True)
    try:
        paths = ["services/gateway/src", "libs/core/src", "libs/models/src"]
        yield os.pathsep.join(str(folder / p) for p in paths)
    finally:
        subprocess.run([*git, "remove", "--force", str(folder)], check=True)


@contextmanager
def _load_samples(every_s: float = 5.0) -> Iterator[list[float]]:
    """The 1-minute load average, sampled on a thread until the block ends."""
    samples = [os.getloadavg()[0]]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(every_s):
            samples.append(os.getloadavg()[0])

    thread = threading.Thread(target=sample, name="load-samples", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


def run() -> dict[str, float | int | str]:
    """The old path and the engine at each concurrency, then mixed adapters on the engine."""
    from raftloop_models import ensure_smollm2

    from raftloop_core.credentials import ensure_dev_credentials
    from raftloop_core.registry import AdapterCard, AdapterRegistry
    from raftloop_core.settings import RuntimeSettings

    load_start = os.getloadavg()
    levels = (1, 4) if _quick() else (1, 4, 8, 16)
    mixed_n = 4 if _quick() else 8
    model_dir = ensure_smollm2()
    base = model_dir.name
    prompts = list(_messages(QUESTIONS).values())
    figures: dict[str, float | str] = {}
    with _load_samples() as loads, tempfile.TemporaryDirectory(prefix="bench-serving-") as name:
        tmp = Path(name)
        print(f"   writing {ADAPTERS} LoRA adapters for {base}", flush=True)
        folders = _write_adapters(model_dir, tmp, ADAPTERS)
        with _old_gateway_path(tmp) as old_path:
            for path, pythonpath in (("old", old_path), ("engine", None)):
                data = tmp / f"var-{path}"
                key = ensure_dev_credentials(RuntimeSettings(data_dir=data)).api_keys["client"]
                gw = _start_gateway(tmp, model_dir, data, pythonpath)
                try:
                    figures |= _sweep(path, gw, key, base, prompts, levels)
                    if path == "engine":
                        registry = AdapterRegistry(data / "registry")
                        adapters = [
                            registry.add(f, AdapterCard(base_model=base, run_id=f"bench-{i}"))
                            for i, f in enumerate(folders)
                        ]
                        figures |= _mixed(gw, key, base, adapters, prompts, mixed_n)
                finally:
                    gw.stop()
        figures |= _bf16(tmp, model_dir, base, prompts, levels)
    load_end = os.getloadavg()
    for n in levels:
        engine, old = figures[f"engine_c{n}_tokens_per_s"], figures[f"old_c{n}_tokens_per_s"]
        figures[f"engine_vs_old_c{n}_tokens_per_s"] = round(float(engine) / float(old), 2)
    return {
        "model": base,
        "max_tokens": MAX_TOKENS,
        "requests_per_level": ", ".join(f"c{n}: {max(4, 2 * n)}" for n in levels),
        "capture": "off (GATEWAY_CAPTURE=false); no rag service, prompts carry their documents",
        "cpu_cores_on_machine": os.cpu_count() or 0,
        "omp": f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'PASSIVE')}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "load_avg_1m_start": round(load_start[0], 2),
        "load_avg_1m_mean": round(sum(loads) / len(loads), 2),
        "load_avg_1m_max": round(max(loads), 2),
        "load_avg_1m_end": round(load_end[0], 2),
        "load_avg_15m_end": round(load_end[2], 2),
        **figures,
        "target": "engine tokens/s at c8 >= 3x c1; mixed adapters >= 0.8x the single-adapter "
        "batch; engine p50 TTFT <= 2 s at c8 (2 cores)",
    }


def _screen(candidates: int) -> None:
    """Print demo questions whose greedy answer runs to MAX_TOKENS (one per document)."""
    import raftloop_demo_kb as kb
    from raftloop_models import ensure_smollm2

    from raftloop_core.credentials import ensure_dev_credentials
    from raftloop_core.settings import RuntimeSettings

    model_dir = ensure_smollm2()
    messages = _messages()
    ids = list(messages)[:: max(1, len(messages) // candidates)]
    with tempfile.TemporaryDirectory(prefix="bench-serving-screen-") as tmp:
        data = Path(tmp) / "var"
        key = ensure_dev_credentials(RuntimeSettings(data_dir=data)).api_keys["client"]
        gw = _start_gateway(Path(tmp), model_dir, data, None)
        try:
            work = [(model_dir.name, messages[i]) for i in ids]
            samples, wall = asyncio.run(_closed_loop(gw.url, key, work, 16))
        finally:
            gw.stop()
    document = {q.id: q.document for q in kb.questions()}
    kept: dict[str, str] = {}
    for qid, sample in zip(ids, samples, strict=True):
        if sample.completion_tokens >= MAX_TOKENS and document[qid] not in kept:
            kept[document[qid]] = qid
    full = sum(s.completion_tokens >= MAX_TOKENS for s in samples)
    print(f"{full} of {len(ids)} answers ran to {MAX_TOKENS} tokens ({wall:.0f} s)")
    print(f"QUESTIONS = {tuple(sorted(kept.values()))!r}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--screen"]:
        _screen(int(sys.argv[2]) if len(sys.argv) > 2 else 1000)
    else:
        print(json.dumps(run(), indent=2))


def _bf16(
    tmp: Path, model_dir: Path, base: str, prompts: list[Any], levels: tuple[int, ...]
) -> dict[str, float | str]:
    """The engine with GATEWAY_MODEL_DTYPE=bfloat16 at c1 and c8 (c4 in the quick form)."""
    from raftloop_core.credentials import ensure_dev_credentials
    from raftloop_core.settings import RuntimeSettings

    data = tmp / "var-bf16"
    key = ensure_dev_credentials(RuntimeSettings(data_dir=data)).api_keys["client"]
    gw = _start_gateway(tmp, model_dir, data, None, {"GATEWAY_MODEL_DTYPE": "bfloat16"})
    try:
        out: dict[str, float | str] = dict(
            _sweep("bf16", gw, key, base, prompts, (levels[0], levels[min(2, len(levels) - 1)]))
        )
    finally:
        gw.stop()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    out["bf16_cpu_support"] = (
        "AMX-BF16"
        if "amx_bf16" in flags
        else "AVX-512 BF16"
        if "avx512_bf16" in flags
        else "none (bf16 emulated)"
    )
    return out


def notes(figures: dict[str, float | int | str]) -> str:
    """Which targets the run met, and why time to first token at c8 has a floor on 2 cores."""

    def num(key: str) -> float:
        return float(figures[key])

    speedup, mixed = num("engine_c8_vs_c1_speedup"), num("mixed4_vs_single_c8")
    ttft1, ttft8 = num("engine_c1_ttft_p50_s"), num("engine_c8_ttft_p50_s")
    verdicts = [
        f"c8 vs c1 tokens/s {speedup}x (target 3x: {'met' if speedup >= 3 else 'not met'})",
        f"mixed adapters {mixed}x the single-adapter batch (target 0.8x: "
        f"{'met' if mixed >= 0.8 else 'not met'})",
        f"p50 time to first token at c8 {ttft8} s (target 2 s: "
        f"{'met' if ttft8 <= 2 else 'not met'})",
    ]
    return (
        "Targets: "
        + "; ".join(verdicts)
        + f". Load average {figures['load_avg_1m_mean']} on average during the run (the "
        "benchmark's own client and gateway included). A first token needs its prompt's "
        f"prefill: {figures['engine_prompt_tokens_mean']} tokens, {ttft1} s alone at c1, compute "
        "bound on two cores. The engine prefills every waiting request before the next decode "
        "step, one prompt per forward pass, so when eight arrive together the median one waits "
        "for several others' prefills before its own: in float32 time to first token at c8 sits "
        "near the 2 s target and moves with the machine's other work from run to run. Batching "
        "prefills would not lower it (a 360-token prefill already keeps both cores' matrix units "
        "busy); a shorter prompt, fewer retrieved chunks, more cores or faster arithmetic "
        "would." + _bf16_note(figures)
    )


def _bf16_note(figures: dict[str, float | int | str]) -> str:
    if "bf16_c8_ttft_p50_s" not in figures:
        return ""
    return (
        f" With GATEWAY_MODEL_DTYPE=bfloat16 (this CPU's bf16 support: "
        f"{figures['bf16_cpu_support']}), p50 time to first token is "
        f"{figures['bf16_c1_ttft_p50_s']} s at c1 and {figures['bf16_c8_ttft_p50_s']} s at c8, "
        f"{figures['bf16_c8_tokens_per_s']} tokens/s at c8 ({figures['bf16_c8_vs_c1_speedup']}x "
        "its c1); the default stays float32, the precision the trainer evaluates in."
    )
