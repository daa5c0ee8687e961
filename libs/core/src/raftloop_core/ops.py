"""Topic and consumer-group status through kafka-python: end offsets, committed offsets, lag.

End offsets are read from the high-water mark of a real fetch, not from ListOffsets: Tansu
answers ListOffsets(latest) wrongly after batched writes, and the fetch high-water mark is
right on both Tansu and Apache Kafka.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from raftloop_core.messaging import _kafka_python_security, admin_client
from raftloop_core.settings import KafkaSettings


@dataclass(frozen=True)
class PartitionStatus:
    """One partition's end offset and, for a group, its committed offset and lag."""

    topic: str
    partition: int
    end_offset: int
    committed: int | None = None

    @property
    def lag(self) -> int:
        """Messages not yet committed by the group (everything, if it committed nothing)."""
        return max(0, self.end_offset - (self.committed or 0))


@dataclass(frozen=True)
class TopicStatus:
    """A topic and its partitions' end offsets."""

    name: str
    partitions: list[PartitionStatus]

    @property
    def end_offset(self) -> int:
        """Messages ever written to the topic (sum of partition end offsets)."""
        return sum(p.end_offset for p in self.partitions)


@dataclass(frozen=True)
class GroupStatus:
    """A consumer group's committed offsets and lag per partition."""

    group_id: str
    state: str
    partitions: list[PartitionStatus]

    @property
    def lag(self) -> int:
        """Total lag over every partition the group has committed on."""
        return sum(p.lag for p in self.partitions)


def end_offsets(
    settings: KafkaSettings, partitions: dict[str, int], *, timeout_s: float = 5.0
) -> dict[tuple[str, int], int]:
    """End offset (high-water mark) of every partition of the given topics."""
    from kafka import KafkaConsumer, TopicPartition

    tps = [TopicPartition(t, p) for t, n in partitions.items() for p in range(n)]
    if not tps:
        return {}
    consumer = KafkaConsumer(
        bootstrap_servers=settings.servers,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=1024,  # one small fetch per partition is enough for the mark
        fetch_max_wait_ms=50,
        request_timeout_ms=max(int(timeout_s * 1000) + 1000, 5000),
        **_kafka_python_security(settings),
    )
    marks: dict[tuple[str, int], int] = {}
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        deadline = time.monotonic() + timeout_s
        while len(marks) < len(tps) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=100, max_records=10_000)
            for tp in tps:
                mark = consumer.highwater(tp)
                if mark is not None and (tp.topic, tp.partition) not in marks:
                    marks[(tp.topic, tp.partition)] = mark
                    consumer.pause(tp)
    finally:
        consumer.close()
    return marks


def topic_status(settings: KafkaSettings, *, include_internal: bool = False) -> list[TopicStatus]:
    """Every topic with its partitions' end offsets."""
    admin = admin_client(settings)
    try:
        described = admin.describe_topics()
    finally:
        admin.close()
    counts = {
        d["name"]: len(d["partitions"])
        for d in described
        if include_internal or not (d.get("is_internal") or d["name"].startswith("__"))
    }
    marks = end_offsets(settings, counts)
    return [
        TopicStatus(
            name,
            [PartitionStatus(name, p, marks.get((name, p), 0)) for p in range(counts[name])],
        )
        for name in sorted(counts)
    ]


def group_status(settings: KafkaSettings) -> list[GroupStatus]:
    """Every consumer group with its committed offsets and lag per partition."""
    admin = admin_client(settings)
    try:
        groups: list[dict[str, Any]] = admin.list_groups()
        committed: dict[str, dict[tuple[str, int], int]] = {}
        for group in groups:
            offsets = admin.list_group_offsets(group["group_id"]).get(group["group_id"], {})
            committed[group["group_id"]] = {
                (tp.topic, tp.partition): meta.offset
                for tp, meta in offsets.items()
                if meta.offset is not None and meta.offset >= 0
            }
        topics = sorted({t for offsets in committed.values() for t, _ in offsets})
        counts = (
            {d["name"]: len(d["partitions"]) for d in admin.describe_topics(topics)}
            if topics
            else {}
        )
    finally:
        admin.close()
    marks = end_offsets(settings, counts)
    out = []
    for group in sorted(groups, key=lambda g: g["group_id"]):
        offsets = committed[group["group_id"]]
        topics = sorted({t for t, _ in offsets})
        partitions = [
            PartitionStatus(t, p, marks.get((t, p), 0), offsets.get((t, p)))
            for t in topics
            for p in range(counts.get(t, 0))
        ]
        out.append(GroupStatus(group["group_id"], str(group.get("group_state", "")), partitions))
    return out
