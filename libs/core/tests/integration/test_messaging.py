"""The shared broker factory on the real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from faststream.kafka import KafkaMessage
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import TypeAdapter

from raftloop_core import events as ev
from raftloop_core.messaging import (
    ATTEMPTS_HEADER,
    ERROR_CLASS_HEADER,
    ERROR_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    consumer_options,
    ensure_topics,
    make_broker,
)
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import sample_events
from raftloop_core.topics import Topic, dead_letter

pytestmark = pytest.mark.integration


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_every_event_type_round_trips(
    kafka_settings: KafkaSettings, unique: Callable[[str], str]
) -> None:
    samples = sample_events()
    names = {topic: unique(str(topic)) for topic in samples}
    ensure_topics(kafka_settings, dict.fromkeys(names.values(), 2))
    broker = make_broker(kafka_settings)
    received: dict[str, tuple[bytes | None, bytes]] = {}

    @broker.subscriber(*names.values(), **consumer_options(kafka_settings, group_id=unique("g")))  # type: ignore[untyped-decorator]
    async def collect(msg: KafkaMessage) -> None:
        record: Any = msg.raw_message  # one aiokafka ConsumerRecord: not a batch subscriber
        received[record.topic] = (record.key, msg.body)

    async with broker:
        await broker.start()
        for topic, event in samples.items():
            await broker.publish(event, topic=names[topic], key=ev.event_key(topic, event))
        await wait_for(lambda: len(received) == len(samples))

    for topic, event in samples.items():
        key, body = received[names[topic]]
        decoded = ev.adapter_for(topic).validate_json(body)
        assert decoded == event, topic
        assert key == ev.event_key(topic, event)


async def test_document_union_decodes_through_a_handler(
    kafka_settings: KafkaSettings, unique: Callable[[str], str]
) -> None:
    topic = unique("kb")
    broker = make_broker(kafka_settings)
    got: list[ev.DocumentSubmitted | ev.DocumentDeleted] = []

    @broker.subscriber(topic, **consumer_options(kafka_settings, group_id=unique("g")))  # type: ignore[untyped-decorator]
    async def on_document(event: ev.DocumentEvent) -> None:
        got.append(event)

    deleted = ev.DocumentDeleted(document_id="doc-1")
    async with broker:
        await broker.start()
        await broker.publish(sample_events()[Topic.KB_DOCUMENT], topic=topic, key=b"doc-1")
        await broker.publish(deleted, topic=topic, key=b"doc-1")
        await wait_for(lambda: len(got) == 2)
    assert isinstance(got[0], ev.DocumentSubmitted)
    assert got[1] == deleted


async def test_malformed_messages_are_dead_lettered_and_the_partition_moves_on(
    kafka_settings: KafkaSettings, unique: Callable[[str], str]
) -> None:
    topic = unique("chat")
    ensure_topics(kafka_settings, {topic: 1, dead_letter(topic): 1})
    registry = CollectorRegistry()
    broker = make_broker(kafka_settings, registry=registry, service="test")
    good: list[ev.FeedbackReceived] = []
    parked: list[KafkaMessage] = []
    options = consumer_options(kafka_settings, group_id=unique("g"))

    @broker.subscriber(topic, **options)  # type: ignore[untyped-decorator]
    async def on_feedback(event: ev.FeedbackReceived) -> None:
        good.append(event)

    @broker.subscriber(dead_letter(topic), **consumer_options(kafka_settings, group_id=unique("d")))  # type: ignore[untyped-decorator]
    async def park(msg: KafkaMessage) -> None:
        parked.append(msg)

    valid = sample_events()[Topic.CHAT_FEEDBACK]
    bad = [
        b"{not json",
        json.dumps({"nope": 1}).encode(),
        b"\xff\xfe\x00binary",
        b"x" * (kafka_settings.max_message_bytes + 10),
    ]
    async with broker:
        await broker.start()
        for payload in bad:
            await broker.publish(payload, topic=topic, key=b"k")
        await broker.publish(valid, topic=topic, key=b"k")
        await wait_for(lambda: len(good) == 1 and len(parked) == len(bad))

    assert good == [valid]
    assert [m.body for m in parked] == bad
    offsets = []
    for msg in parked:
        headers = msg.headers
        assert headers[SOURCE_TOPIC_HEADER] == topic
        assert headers[SOURCE_PARTITION_HEADER] == "0"
        offsets.append(int(headers[SOURCE_OFFSET_HEADER]))
        assert headers[ERROR_HEADER]
    assert offsets == [0, 1, 2, 3]
    classes = [m.headers[ERROR_CLASS_HEADER] for m in parked]
    assert classes[1] == "ValidationError"
    assert classes[3] == "PoisonMessage"
    metrics = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    dead = {k: v for k, v in metrics.items() if k[0] == "raftloop_dead_letters_total"}
    assert sum(dead.values()) == len(bad)
    assert any(k[0].startswith("faststream_received_messages_total") for k in metrics)


async def test_dead_letter_topics_are_never_dead_lettered(
    kafka_settings: KafkaSettings, unique: Callable[[str], str]
) -> None:
    topic = dead_letter(unique("chat"))
    broker = make_broker(kafka_settings)
    seen: list[bytes] = []

    @broker.subscriber(topic, **consumer_options(kafka_settings, group_id=unique("g")))  # type: ignore[untyped-decorator]
    async def inspect(event: ev.FeedbackReceived, msg: KafkaMessage) -> None:  # noqa: ARG001  # FastStream validates the body as it
        seen.append(msg.body)

    async with broker:
        await broker.start()
        await broker.publish(b"garbage", topic=topic)
        await broker.publish(sample_events()[Topic.CHAT_FEEDBACK], topic=topic)
        await wait_for(lambda: len(seen) == 1)
    assert dead_letter(topic + "x") != topic  # sanity: names still derive
    with pytest.raises(ValueError, match="already a dead-letter topic"):
        dead_letter(topic)


async def test_transient_failures_back_off_then_succeed(
    kafka_settings: KafkaSettings, unique: Callable[[str], str]
) -> None:
    topic = unique("judged")
    broker = make_broker(kafka_settings)
    attempts: list[float] = []
    done: list[Any] = []

    @broker.subscriber(topic, **consumer_options(kafka_settings, group_id=unique("g")))  # type: ignore[untyped-decorator]
    async def flaky(event: ev.FeedbackReceived) -> None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("endpoint timed out")
        done.append(event)

    async with broker:
        await broker.start()
        await broker.publish(sample_events()[Topic.CHAT_FEEDBACK], topic=topic)
        await wait_for(lambda: len(done) == 1)
        await asyncio.sleep(0.5)  # nothing more arrives: the success was committed

    assert len(attempts) == 3
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # Full-jitter backoff: attempt n waits at least half of base * 2**(n-1).
    assert gaps[0] >= kafka_settings.retry_backoff_s / 2
    assert gaps[1] >= kafka_settings.retry_backoff_s


async def test_a_message_that_always_fails_is_parked_after_the_retry_budget(
    kafka_settings: KafkaSettings, unique: Callable[[str], str]
) -> None:
    topic = unique("judged")
    broker = make_broker(kafka_settings)
    attempts: list[str] = []
    parked: list[KafkaMessage] = []
    processed: list[str] = []

    @broker.subscriber(topic, **consumer_options(kafka_settings, group_id=unique("g")))  # type: ignore[untyped-decorator]
    async def broken(event: ev.TrainingRunFinished) -> None:
        if event.run_id == "bad":
            attempts.append(event.run_id)
            raise TimeoutError("upstream keeps timing out")
        processed.append(event.run_id)

    @broker.subscriber(dead_letter(topic), **consumer_options(kafka_settings, group_id=unique("d")))  # type: ignore[untyped-decorator]
    async def park(msg: KafkaMessage) -> None:
        parked.append(msg)

    run = TypeAdapter(ev.TrainingRunFinished).validate_python(
        sample_events()[Topic.TRAINING_RUN_FINISHED].model_dump()
    )
    async with broker:
        await broker.start()
        await broker.publish(run.model_copy(update={"run_id": "bad"}), topic=topic)
        await broker.publish(run.model_copy(update={"run_id": "good"}), topic=topic)
        await wait_for(lambda: processed == ["good"] and len(parked) == 1)

    assert len(attempts) == kafka_settings.retry_max_attempts
    assert parked[0].headers[ATTEMPTS_HEADER] == str(kafka_settings.retry_max_attempts)
    assert parked[0].headers[ERROR_CLASS_HEADER] == "TimeoutError"


async def test_a_handler_slower_than_max_poll_interval_keeps_its_consumer_in_the_group(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    # Every consumer that calls a model (rag's embedder, the judge's endpoint) may take longer
    # than max.poll.interval.ms on a busy machine (issue #18): the work is never handed away.
    settings = kafka_settings.model_copy(update={"max_poll_interval_ms": 2_000})
    topic = unique("slow")
    ensure_topics(settings, {topic: 2})
    broker = make_broker(settings)
    seen: list[str] = []

    @broker.subscriber(topic, **consumer_options(settings, group_id=unique("g")))  # type: ignore[untyped-decorator]
    async def slow(event: ev.TrainingRunFinished) -> None:
        seen.append(event.run_id)
        if event.run_id.startswith("slow"):
            await asyncio.sleep(5.0)  # 2.5 x max.poll.interval.ms

    run = TypeAdapter(ev.TrainingRunFinished).validate_python(
        sample_events()[Topic.TRAINING_RUN_FINISHED].model_dump()
    )
    async with broker:
        await broker.start()
        for run_id in ("slow-1", "fast-1", "slow-2", "fast-2"):
            await broker.publish(run.model_copy(update={"run_id": run_id}), topic=topic, key=b"k")
        await wait_for(lambda: len(seen) >= 4, timeout_s=40)
        # Published while a handler waits: the paused partition hands it over afterwards.
        await broker.publish(run.model_copy(update={"run_id": "later"}), topic=topic, key=b"j")
        await wait_for(lambda: "later" in seen, timeout_s=20)
        await asyncio.sleep(1.0)

    assert sorted(seen) == ["fast-1", "fast-2", "later", "slow-1", "slow-2"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
