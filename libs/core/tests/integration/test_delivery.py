"""At-least-once delivery and lag on the real broker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from faststream.kafka import KafkaMessage

from raftloop_core import events as ev
from raftloop_core.messaging import consumer_options, ensure_topics, make_broker
from raftloop_core.ops import group_status, topic_status
from raftloop_core.settings import KafkaSettings

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent


def feedback(n: int) -> list[ev.FeedbackReceived]:
    return [
        ev.FeedbackReceived(
            interaction_id=uuid4(), feedback=ev.Feedback(feedback_id=uuid4(), rating=1)
        )
        for _ in range(n)
    ]


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def wait_until(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


async def test_a_killed_consumer_resumes_at_its_committed_offset(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group, out = unique("fb"), unique("g"), tmp_path / "processed.txt"
    ensure_topics(kafka_settings, {topic: 2})
    sent = feedback(60)
    broker = make_broker(kafka_settings)
    async with broker:
        for event in sent:
            await broker.publish(event, topic=topic, key=str(event.interaction_id).encode())

    cmd = [
        sys.executable,
        str(HERE / "consumer_proc.py"),
        kafka_settings.bootstrap_servers,
        topic,
        group,
        str(out),
    ]
    first = subprocess.Popen(cmd)
    try:
        await asyncio.to_thread(wait_until, lambda: len(lines(out)) >= 15)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at = len(lines(out))
    assert killed_at < len(sent), "the kill came too late to test anything"

    second = subprocess.Popen(cmd)
    try:
        expected = {str(e.event_id) for e in sent}
        await asyncio.to_thread(wait_until, lambda: set(lines(out)) >= expected)
    finally:
        second.terminate()
        second.wait(10)

    processed = lines(out)
    assert set(processed) == expected  # nothing lost
    # At-least-once: only messages in flight at the kill (not yet committed) are seen twice.
    assert len(processed) - len(expected) <= 2


async def test_status_shows_the_lag_of_a_group_that_consumed_part_of_a_topic(
    kafka_settings: KafkaSettings, unique: Callable[[str], str]
) -> None:
    topic, group = unique("lag"), unique("g")
    ensure_topics(kafka_settings, {topic: 3})
    broker = make_broker(kafka_settings)
    seen: list[int] = []
    gate = asyncio.Event()

    @broker.subscriber(topic, **consumer_options(kafka_settings, group_id=group))  # type: ignore[untyped-decorator]
    async def partial(msg: KafkaMessage) -> None:
        if len(seen) >= 12:
            await gate.wait()  # hold the rest: never processed, never committed
        record: Any = msg.raw_message  # one aiokafka ConsumerRecord: not a batch subscriber
        seen.append(record.offset)

    async with broker:
        for i, event in enumerate(feedback(30)):
            await broker.publish(event, topic=topic, key=f"k{i % 7}".encode())
        await broker.start()
        deadline = time.monotonic() + 30
        while len(seen) < 12:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the 12th commit lands
        topics = {t.name: t for t in await asyncio.to_thread(topic_status, kafka_settings)}
        groups = {g.group_id: g for g in await asyncio.to_thread(group_status, kafka_settings)}
        gate.set()

    assert topics[topic].end_offset == 30
    assert len(topics[topic].partitions) == 3
    status = groups[group]
    assert sum(p.committed or 0 for p in status.partitions) == 12
    assert status.lag == 18
