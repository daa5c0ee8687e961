"""The shared messaging path (FastStream, typed events, dead letters) vs raw aiokafka."""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from raftloop_core import events as ev
from raftloop_core.embedded import EmbeddedBroker, free_port
from raftloop_core.messaging import consumer_options, ensure_topics, make_broker
from raftloop_core.testing import sample_events, test_kafka_settings
from raftloop_core.topics import Topic

TITLE = "Messaging: consume throughput of the shared broker factory vs raw aiokafka"
N = 3000


async def _ours(bootstrap: str, topic: str, payloads: list[bytes]) -> float:
    settings = test_kafka_settings(bootstrap)
    broker = make_broker(settings)
    done = asyncio.Event()
    count = 0

    group = f"ours-{uuid.uuid4().hex}"

    @broker.subscriber(topic, **consumer_options(settings, group_id=group))  # type: ignore[untyped-decorator]
    async def on_completed(event: ev.ChatCompleted) -> None:  # noqa: ARG001  # decoded: measured
        nonlocal count
        count += 1
        if count == len(payloads):
            done.set()

    async with broker:
        await broker.start()
        start = time.perf_counter()
        await asyncio.wait_for(done.wait(), 300)
        return len(payloads) / (time.perf_counter() - start)


async def _raw(bootstrap: str, topic: str, payloads: list[bytes]) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=3000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    try:
        count = 0
        start: float | None = None
        while count < len(payloads):
            msg = await consumer.getone()
            start = start or time.perf_counter()
            ev.ChatCompleted.model_validate_json(msg.value)  # same decoding work as ours
            await consumer.commit()  # same commit-per-message policy
            count += 1
        assert start is not None
        return len(payloads) / (time.perf_counter() - start)
    finally:
        await consumer.stop()


async def _main() -> dict[str, float | int | str]:
    event = sample_events()[Topic.CHAT_COMPLETED]
    payloads = [
        event.model_copy(update={"event_id": uuid.uuid4()}).model_dump_json().encode()
        for _ in range(N)
    ]
    with EmbeddedBroker(port=free_port()) as broker:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        ensure_topics(test_kafka_settings(broker.bootstrap_servers), {topic: 1})
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        await producer.start()
        for p in payloads:
            await producer.send(topic, p, key=b"k")
        await producer.flush()
        await producer.stop()
        raw = await _raw(broker.bootstrap_servers, topic, payloads)
        ours = await _ours(broker.bootstrap_servers, topic, payloads)
    return {
        "messages": N,
        "raw aiokafka (decode + commit each), msg/s": round(raw),
        "shared factory (FastStream + DLT middleware), msg/s": round(ours),
        "ours / raw": round(ours / raw, 3),
        "target": "informational (the per-service targets build on this path)",
    }


def run() -> dict[str, float | int | str]:
    """Run both paths on one embedded broker."""
    return asyncio.run(_main())
