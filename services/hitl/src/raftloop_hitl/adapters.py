"""I/O around the queue: the outbox relay to Kafka and the cached Kafka ops figures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry, Counter, Gauge

from raftloop_core.events import adapter_for
from raftloop_core.messaging import admin_client
from raftloop_core.ops import end_offsets, group_status, topic_status
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import DLT_SUFFIX, Topic
from raftloop_hitl.store import ReviewStore

log = logging.getLogger(__name__)


PublishedCheck = Callable[[str, str], bool]
"""(topic, event_id) -> whether the event is already on the topic."""


class OutboxRelay:
    """Publishes outbox rows in order and marks each sent only after the broker acked it.

    Rows go out one at a time, so after a crash (or a publish error) at most the oldest unsent
    row can already be on the broker without being marked. Before re-sending that row the relay
    looks for its deterministic `event_id` on the topic, so a kill -9 between the broker's ack
    and the mark does not publish it twice.
    """

    def __init__(
        self,
        store: ReviewStore,
        broker: KafkaBroker,
        *,
        prefix: str,
        poll_s: float,
        published: PublishedCheck | None = None,
        leader: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.prefix = prefix
        self.poll_s = poll_s
        self.check = published
        self.leader = leader
        self._wake = asyncio.Event()
        self._suspect = True  # the oldest unsent row may have reached the broker before a crash
        self.published = 0

    def wake(self) -> None:
        """Publish now rather than at the next poll."""
        self._wake.set()

    async def drain(self) -> int:
        """Publish every pending row; returns how many were sent."""
        sent = 0
        while rows := await asyncio.to_thread(self.store.pending, 200):
            for row_id, topic, key, payload, event_id in rows:
                if self._suspect and self.check is not None:
                    found = await asyncio.to_thread(self.check, self.prefix + topic, event_id)
                    self._suspect = False
                    log.info(
                        "checked the oldest unsent outbox row on the broker",
                        extra={"event_id": event_id, "found": found},
                    )
                    if found:
                        await asyncio.to_thread(self.store.mark_sent, [row_id])
                        continue
                self._suspect = True  # until the mark below is written
                event = adapter_for(Topic(topic)).validate_json(payload)
                await self.broker.publish(event, topic=self.prefix + topic, key=key.encode())
                await asyncio.to_thread(self.store.mark_sent, [row_id])
                self._suspect = False
                sent += 1
        self.published += sent
        return sent

    async def run(self) -> None:
        """Drain forever; a broker error is logged and retried after a pause."""
        while True:
            self._wake.clear()
            try:
                if self.leader is None or await asyncio.to_thread(self.leader):
                    await self.drain()
                else:
                    self._suspect = True  # whoever leads may die mid-send; check on takeover
            except Exception as exc:  # noqa: BLE001  # the relay outlives any failure, retrying
                log.warning("outbox publish failed; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)


def published_on_kafka(kafka: KafkaSettings, *, tail: int = 500) -> PublishedCheck:
    """A check that scans the tail of every partition of a topic for an event id.

    It reads on until the partition stays quiet rather than stopping at the reported end
    offset, because a just-restarted broker connection can report a stale high-water mark.
    """

    def check(topic: str, event_id: str) -> bool:
        from kafka import KafkaConsumer, TopicPartition

        count = _partition_count(kafka, topic)
        marks = end_offsets(kafka, {topic: count})
        consumer = KafkaConsumer(
            bootstrap_servers=kafka.servers,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        try:
            tps = [TopicPartition(topic, p) for p in range(count)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, max(0, marks.get((topic, tp.partition), 0) - tail))
            quiet, deadline = 0, time.monotonic() + 30
            while quiet < 3 and time.monotonic() < deadline:
                batch = consumer.poll(timeout_ms=300)
                quiet = 0 if batch else quiet + 1
                for records in batch.values():
                    if any(_event_id(r.value) == event_id for r in records):
                        return True
            return False
        finally:
            consumer.close()

    return check


def _event_id(value: bytes | None) -> str | None:
    try:
        found = json.loads(value or b"{}").get("event_id")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def _partition_count(kafka: KafkaSettings, topic: str) -> int:
    admin = admin_client(kafka)
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    return len(described[0]["partitions"]) if described else 0


@dataclass
class OpsSnapshot:
    """Kafka figures at one moment."""

    at: float = 0.0
    topics: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)
    queues: dict[str, tuple[int, float]] = field(default_factory=dict)
    error: str | None = None


class KafkaOpsMonitor:
    """Topic end offsets and rates, group lag, dead letters and queue depth, cached briefly.

    Reads happen in a worker thread (kafka-python blocks); the Prometheus gauges are set from
    the same snapshot, so `/metrics` never waits on Kafka.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        store: ReviewStore,
        registry: CollectorRegistry,
        *,
        cache_s: float,
    ) -> None:
        self.kafka = kafka
        self.store = store
        self.cache_s = cache_s
        self.snap = OpsSnapshot()
        self._lock = asyncio.Lock()
        self._last_offsets: dict[str, tuple[float, int]] = {}
        self.g_end = Gauge(
            "raftloop_topic_end_offset", "Messages ever written.", ["topic"], registry=registry
        )
        self.g_rate = Gauge(
            "raftloop_topic_rate", "Messages per second.", ["topic"], registry=registry
        )
        self.g_lag = Gauge(
            "raftloop_consumer_lag", "Uncommitted messages.", ["group", "topic"], registry=registry
        )
        self.g_dlt = Gauge(
            "raftloop_dead_letter_topic_messages",
            "Messages on a .dlt topic (its end offset), cluster-wide.",
            ["topic"],
            registry=registry,
        )
        self.g_depth = Gauge(
            "hitl_queue_depth", "Open review items.", ["tenant"], registry=registry
        )
        self.g_age = Gauge(
            "hitl_queue_oldest_age_seconds",
            "Age of the oldest open item.",
            ["tenant"],
            registry=registry,
        )
        self.c_reviews = Counter(
            "hitl_reviews", "Reviews submitted.", ["action"], registry=registry
        )

    async def snapshot(self, *, max_age_s: float | None = None) -> OpsSnapshot:
        """The latest figures, refreshed when older than the cache time."""
        limit = self.cache_s if max_age_s is None else max_age_s
        if time.time() - self.snap.at <= limit:
            return self.snap
        async with self._lock:
            if time.time() - self.snap.at > limit:
                self.snap = await asyncio.to_thread(self._read)
                self._export(self.snap)
        return self.snap

    async def run(self, every_s: float) -> None:
        """Keep the gauges fresh in the background."""
        while True:
            await self.snapshot(max_age_s=0)
            await asyncio.sleep(every_s)

    def _read(self) -> OpsSnapshot:
        now = time.time()
        snap = OpsSnapshot(at=now, queues=self.store.depth())
        try:
            topics = topic_status(self.kafka)
            groups = group_status(self.kafka)
        except Exception as exc:  # noqa: BLE001  # the page shows why instead of failing
            snap.error = f"{type(exc).__name__}: {exc}"
            return snap
        for t in topics:
            before = self._last_offsets.get(t.name)
            rate = 0.0
            if before is not None and now > before[0]:
                rate = max(0.0, (t.end_offset - before[1]) / (now - before[0]))
            self._last_offsets[t.name] = (now, t.end_offset)
            snap.topics.append(
                {
                    "name": t.name,
                    "end_offset": t.end_offset,
                    "rate": rate,
                    "partitions": len(t.partitions),
                }
            )
            if t.name.endswith(DLT_SUFFIX):
                snap.dead_letters[t.name] = t.end_offset
        for g in groups:
            per_topic: dict[str, int] = {}
            for p in g.partitions:
                per_topic[p.topic] = per_topic.get(p.topic, 0) + p.lag
            snap.groups.append(
                {"group": g.group_id, "state": g.state, "lag": g.lag, "topics": per_topic}
            )
        return snap

    def _export(self, snap: OpsSnapshot) -> None:
        for t in snap.topics:
            self.g_end.labels(t["name"]).set(t["end_offset"])
            self.g_rate.labels(t["name"]).set(t["rate"])
        for g in snap.groups:
            for topic, lag in g["topics"].items():
                self.g_lag.labels(g["group"], topic).set(lag)
        for name, count in snap.dead_letters.items():
            self.g_dlt.labels(name).set(count)
        for tenant, (depth, age) in snap.queues.items():
            self.g_depth.labels(tenant).set(depth)
            self.g_age.labels(tenant).set(age)
