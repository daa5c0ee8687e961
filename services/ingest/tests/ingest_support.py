"""Shared helpers of ingest's integration tests: events, a topic collector, waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID, uuid4

from aiokafka import AIOKafkaConsumer

from raftloop_core import events as ev
from raftloop_core.messaging import ensure_topics
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import TOPIC_SPECS, Topic, dead_letter
from raftloop_ingest.settings import IngestSettings

CARD = "4111 1111 1111 1111"


async def wait_for(predicate: Callable[[], object], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def create_topics(kafka: KafkaSettings, prefix: str) -> None:
    names: dict[str, int] = {}
    for topic in (
        Topic.CHAT_COMPLETED,
        Topic.CHAT_FEEDBACK,
        Topic.INTERACTION_INGESTED,
        Topic.KB_DOCUMENT,
    ):
        names[f"{prefix}{topic}"] = TOPIC_SPECS[topic].partitions
        names[dead_letter(f"{prefix}{topic}")] = 1
    ensure_topics(kafka, names)


def chat(
    question: str, answer: str = "Refunds take five business days.", **kw: object
) -> ev.ChatCompleted:
    fields: dict[str, object] = {
        "interaction_id": uuid4(),
        "conversation_id": f"conv-{uuid4().hex[:8]}",
        "model": "smollm2",
        "base_model": "smollm2-135m",
        "messages": [
            ev.ChatMessage(role="system", content="You are Vellumbox support."),
            ev.ChatMessage(role="user", content=question),
        ],
        "answer": answer,
    }
    return ev.ChatCompleted.model_validate(fields | kw)


def feedback(
    interaction_id: UUID, correction: str | None = None, rating: int = -1
) -> ev.FeedbackReceived:
    return ev.FeedbackReceived(
        interaction_id=interaction_id,
        feedback=ev.Feedback(feedback_id=uuid4(), rating=rating, correction=correction),
    )


@dataclass
class Record:
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str]


@dataclass
class Collector:
    """Reads topics from the beginning with a plain aiokafka consumer."""

    kafka: KafkaSettings
    topics: list[str]
    records: list[Record] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.kafka.servers,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=1000,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for tp_records in batch.values():
                for r in tp_records:
                    headers = {k: v.decode() for k, v in (r.headers or ())}
                    self.records.append(Record(r.topic, r.key, r.value or b"", headers))

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
        await self._consumer.stop()

    def on(self, topic: str) -> list[Record]:
        return [r for r in self.records if r.topic == topic]

    def ingested(self, topic: str) -> list[ev.InteractionIngested]:
        return [ev.InteractionIngested.model_validate_json(r.value) for r in self.on(topic)]


def settings_for(kafka: KafkaSettings, prefix: str, data_dir: str, group: str) -> IngestSettings:
    return IngestSettings.model_validate(
        {
            "topic_prefix": prefix,
            "group_id": group,
            "kafka": kafka,
            "runtime": {"data_dir": data_dir},
        }
    )
