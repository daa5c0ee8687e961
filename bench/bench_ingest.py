"""Ingest throughput on the real embedded broker vs raw aiokafka consume-produce loops.

The same pre-produced chat events are read three ways, each by a fresh consumer group:
  * ours: the ingest app (FastStream consumers, redaction, screen, dedupe, SQLite state,
    per-message commit after the publish is acknowledged);
  * raw_same_work: a hand-written aiokafka loop doing the same cleaning (redaction, screen,
    question hash) without state, batching commits per fetched batch;
  * raw_passthrough: a hand-written aiokafka loop that copies bytes (the broker's ceiling).
Throughput is N over the time from the first input handed to the loop (after its group join)
to the N-th output seen by a separate consumer. The machine is shared, so the two paths
alternate (and swap order) over several rounds; the figures are the best and the median round,
the CPU seconds this process spent per interaction in the same window (less sensitive to other
people's load than wall time), and the load average around the run. Both paths use the same
Redactor: patterns only, then (`ner_*` figures) with the spaCy NER model when it is installed.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import uuid4

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from raftloop_core import events as ev
from raftloop_core.api import KeyStore
from raftloop_core.embedded import EmbeddedBroker, free_port
from raftloop_core.messaging import ensure_topics, make_broker
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import Topic
from raftloop_ingest.adapters import SqlIngestStore, make_engine
from raftloop_ingest.app import create_app
from raftloop_ingest.domain import clean_interaction, question_hash, screened_texts
from raftloop_ingest.redaction import Redactor, build_analyzer, resolve_ner_model
from raftloop_ingest.screen import screen
from raftloop_ingest.settings import IngestSettings

TITLE = "Ingest throughput (interactions/s): ingest app vs raw aiokafka loops, embedded broker"
N = 2_000
ROUNDS = 7
N_NER = 400  # NER costs ~6x the patterns per interaction; fewer events keep the run short
ROUNDS_NER = 3
TIMEOUT_S = 300.0


def events(n: int) -> list[ev.ChatCompleted]:
    rng = random.Random(1)
    out = []
    for i in range(n):
        pii = f" My email is user{i}@example.com." if rng.random() < 0.5 else ""
        question = f"How do I restore version {i % 40} of my vault?{pii}"
        out.append(
            ev.ChatCompleted(
                interaction_id=uuid4(),
                conversation_id=f"c{i}",
                model="smollm2",
                base_model="smollm2-135m",
                messages=[
                    ev.ChatMessage(role="system", content="You are Vellumbox support."),
                    ev.ChatMessage(role="user", content=question),
                ],
                answer="Open the vault, choose Versions, pick the date and press Restore.",
            )
        )
    return out


Window = tuple[float, float]
"""(wall seconds, CPU seconds of this process)."""


def now() -> Window:
    """The current wall clock and this process's CPU time."""
    return time.monotonic(), time.process_time()


async def count_outputs(kafka: KafkaSettings, topic: str, n: int, started: list[Window]) -> Window:
    """Wall and CPU seconds from `started[0]` (set on the loop's first input) to the n-th output."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.servers, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen = 0
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while seen < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=20)
            seen += sum(len(v) for v in batch.values())
    finally:
        await consumer.stop()
    if seen < n or not started:
        raise RuntimeError(f"only {seen} of {n} outputs on {topic} in {TIMEOUT_S}s")
    wall, cpu = now()
    return wall - started[0][0], cpu - started[0][1]


async def ours(
    kafka: KafkaSettings, prefix: str, data: Path, redactor: Redactor, expected: int
) -> Window:
    """Seconds the ingest app (fresh group, fresh state) takes; `expected` outputs in all."""
    settings = IngestSettings.model_validate(
        {
            "topic_prefix": prefix,
            "group_id": f"bench-{uuid4().hex[:6]}",
            "kafka": kafka,
            "runtime": {"data_dir": data},
        }
    )
    store = SqlIngestStore(make_engine(settings.database_url()))
    app = create_app(settings, store=store, scrubbers=redactor, keys=KeyStore([]))
    pipeline = app.state.pipeline  # the bench wraps its handler where app.py calls it
    handle: Callable[[list[ev.ChatCompleted]], Awaitable[list[ev.InteractionIngested]]]
    handle = pipeline.on_chat_batch
    started: list[Window] = []

    async def timed(events: list[ev.ChatCompleted]) -> list[ev.InteractionIngested]:
        if not started:
            started.append(now())
        return await handle(events)

    pipeline.on_chat_batch = timed
    async with app.router.lifespan_context(app):
        return await count_outputs(
            kafka, f"{prefix}{Topic.INTERACTION_INGESTED}", expected, started
        )


async def raw_loop(
    kafka: KafkaSettings, src: str, dst: str, redactor: Redactor | None, expected: int = N
) -> Window:
    """Seconds a hand-written aiokafka loop takes; `expected` outputs on `dst` in all."""
    consumer = AIOKafkaConsumer(
        src,
        bootstrap_servers=kafka.servers,
        group_id=f"raw-{uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka.servers, acks="all")
    await consumer.start()
    await producer.start()

    started: list[Window] = []

    async def loop() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=200)
            if batch and not started:
                started.append(now())
            sends = []
            for records in batch.values():
                for r in records:
                    value = r.value if redactor is None else clean(r.value, redactor)
                    sends.append(await producer.send(dst, value, key=r.key))
            await asyncio.gather(*sends)
            if batch:
                await consumer.commit()

    task = asyncio.create_task(loop())
    try:
        return await count_outputs(kafka, dst, expected, started)
    finally:
        task.cancel()
        await consumer.stop()
        await producer.stop()


def clean(value: bytes, redactor: Redactor) -> bytes:
    event = ev.ChatCompleted.model_validate_json(value)
    scrub = redactor.session(str(event.interaction_id))
    flags = screen(screened_texts(event))
    interaction = clean_interaction(event, scrub, flags=flags, feedback=None)
    interaction = interaction.model_copy(
        update={"question_hash": question_hash(event.tenant, interaction.question)}
    )
    out = ev.InteractionIngested(interaction=interaction, source_event_id=event.event_id)
    return out.model_dump_json().encode()


async def measure(
    kafka: KafkaSettings, redactor: Redactor, n: int, rounds: int
) -> dict[str, float | int | str]:
    """Figures of both paths over `n` fresh events, `rounds` alternating rounds."""
    prefix = f"bench{uuid4().hex[:6]}."
    chat_topic = f"{prefix}{Topic.CHAT_COMPLETED}"
    names = {chat_topic: 6, f"{prefix}{Topic.INTERACTION_INGESTED}": 6, f"{prefix}raw1": 6}
    names |= {f"{prefix}raw2": 6, f"{chat_topic}.dlt": 1, f"{prefix}{Topic.CHAT_FEEDBACK}": 6}
    ensure_topics(kafka, names)
    broker = make_broker(kafka)
    async with broker:
        await broker.start()
        for event in events(n):
            await broker.publish(
                event, topic=chat_topic, key=ev.event_key(Topic.CHAT_COMPLETED, event)
            )
    load_before = os.getloadavg()
    ours_w: list[Window] = []
    same_w: list[Window] = []
    for round_ in range(1, rounds + 1):

        async def ingest(round_: int = round_) -> None:
            with tempfile.TemporaryDirectory() as tmp:
                ours_w.append(await ours(kafka, prefix, Path(tmp), redactor, n * round_))

        async def raw(round_: int = round_) -> None:
            same_w.append(await raw_loop(kafka, chat_topic, f"{prefix}raw1", redactor, n * round_))

        # Alternate which path goes first, so that neither always follows the other's warm-up.
        for path in (ingest, raw) if round_ % 2 else (raw, ingest):
            await path()
    pass_w = await raw_loop(kafka, chat_topic, f"{prefix}raw2", None, n)
    load_after = os.getloadavg()
    ours_rates = [n / wall for wall, _ in ours_w]
    same_rates = [n / wall for wall, _ in same_w]
    ratios = [o / r for o, r in zip(ours_rates, same_rates, strict=True)]
    best_ours, best_same = max(ours_rates), max(same_rates)
    return {
        "interactions": n,
        "rounds": rounds,
        "ingest_interactions_per_s": round(best_ours, 1),
        "raw_same_work_interactions_per_s": round(best_same, 1),
        "raw_passthrough_messages_per_s": round(n / pass_w[0], 1),
        "ingest_vs_raw_same_work": round(best_ours / best_same, 3),
        "ingest_median_interactions_per_s": round(statistics.median(ours_rates), 1),
        "raw_same_work_median_interactions_per_s": round(statistics.median(same_rates), 1),
        "ingest_vs_raw_same_work_median_of_rounds": round(statistics.median(ratios), 3),
        "ingest_vs_raw_same_work_per_round": " ".join(f"{r:.2f}" for r in ratios),
        "ingest_cpu_ms_per_interaction_median": round(
            1000 * statistics.median(cpu for _, cpu in ours_w) / n, 3
        ),
        "raw_same_work_cpu_ms_per_interaction_median": round(
            1000 * statistics.median(cpu for _, cpu in same_w) / n, 3
        ),
        "ingest_vs_raw_same_work_cpu": round(
            statistics.median(cpu for _, cpu in same_w)
            / statistics.median(cpu for _, cpu in ours_w),
            3,
        ),
        "ingest_vs_raw_passthrough": round(best_ours * pass_w[0] / n, 3),
        "load_average_1m_before_after": f"{load_before[0]:.2f} / {load_after[0]:.2f}",
    }


async def measure_all(kafka: KafkaSettings) -> dict[str, float | int | str]:
    """Patterns-only redaction (the default install), then with the NER model if installed."""
    figures = await measure(kafka, Redactor(hash_key=b"bench"), N, ROUNDS)
    figures |= {
        "cpu_cores": os.cpu_count() or 0,
        "target": "ingest >= 0.8 x raw aiokafka loop (same work)",
    }
    model = resolve_ner_model("auto")
    if model is None:
        return figures | {"ner": "no spaCy NER model installed: not measured"}
    ner = Redactor(hash_key=b"bench", analyzer=build_analyzer(model))
    with_ner = await measure(kafka, ner, N_NER, ROUNDS_NER)
    keep = ("ingest_vs_raw_passthrough", "raw_passthrough_messages_per_s")
    return (
        figures
        | {"ner_model": model}
        | {f"ner_{k}": v for k, v in with_ner.items() if k not in keep}
    )


def run() -> dict[str, float | int | str]:
    """Start an embedded broker, run all three paths over the same events, return figures."""
    with EmbeddedBroker(port=free_port()) as broker:
        kafka = KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            session_timeout_ms=3_000,
            heartbeat_interval_ms=1_000,
        )
        return asyncio.run(measure_all(kafka))


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value}")
