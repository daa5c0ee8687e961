"""Every Kafka topic of the loop, in one enum: no other module spells a topic string."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DLT_SUFFIX = ".dlt"


class Topic(StrEnum):
    """Topic names follow `<entity>.<fact>.v<N>`."""

    CHAT_COMPLETED = "chat.completed.v1"
    CHAT_FEEDBACK = "chat.feedback.v1"
    INTERACTION_INGESTED = "interaction.ingested.v1"
    INTERACTION_JUDGED = "interaction.judged.v1"
    REVIEW_COMPLETED = "review.completed.v1"
    EXAMPLE_CURATED = "dataset.example.curated.v1"
    KB_DOCUMENT = "kb.document.v1"
    TRAINING_RUN_FINISHED = "training.run.finished.v1"
    ADAPTER_PROMOTED = "adapter.promoted.v1"
    ADAPTER_REJECTED = "adapter.rejected.v1"
    ADAPTER_ROLLED_BACK = "adapter.rolled_back.v1"

    @property
    def dlt(self) -> str:
        """The dead-letter topic of this topic."""
        return dead_letter(self)


@dataclass(frozen=True)
class TopicSpec:
    """How a topic is created: its partitions and what its Kafka key is."""

    name: str
    partitions: int
    key: str


# Partition counts bound how far each consumer group can scale out; the key keeps per-entity order.
TOPIC_SPECS: dict[Topic, TopicSpec] = {
    Topic.CHAT_COMPLETED: TopicSpec(Topic.CHAT_COMPLETED, 6, "interaction_id"),
    Topic.CHAT_FEEDBACK: TopicSpec(Topic.CHAT_FEEDBACK, 6, "interaction_id"),
    Topic.INTERACTION_INGESTED: TopicSpec(Topic.INTERACTION_INGESTED, 6, "interaction_id"),
    Topic.INTERACTION_JUDGED: TopicSpec(Topic.INTERACTION_JUDGED, 6, "interaction_id"),
    Topic.REVIEW_COMPLETED: TopicSpec(Topic.REVIEW_COMPLETED, 3, "interaction_id"),
    Topic.EXAMPLE_CURATED: TopicSpec(Topic.EXAMPLE_CURATED, 3, "interaction_id"),
    Topic.KB_DOCUMENT: TopicSpec(Topic.KB_DOCUMENT, 3, "document_id"),
    Topic.TRAINING_RUN_FINISHED: TopicSpec(Topic.TRAINING_RUN_FINISHED, 1, "run_id"),
    Topic.ADAPTER_PROMOTED: TopicSpec(Topic.ADAPTER_PROMOTED, 1, "alias"),
    Topic.ADAPTER_REJECTED: TopicSpec(Topic.ADAPTER_REJECTED, 1, "alias"),
    Topic.ADAPTER_ROLLED_BACK: TopicSpec(Topic.ADAPTER_ROLLED_BACK, 1, "alias"),
}

DLT_PARTITIONS = 1


def dead_letter(topic: str) -> str:
    """Return the dead-letter topic name for `topic`."""
    if is_dead_letter(topic):
        raise ValueError(f"{topic!r} is already a dead-letter topic; dead letters are never nested")
    return f"{topic}{DLT_SUFFIX}"


def is_dead_letter(topic: str) -> bool:
    """Whether `topic` is a dead-letter topic."""
    return topic.endswith(DLT_SUFFIX)


def all_topics() -> dict[str, int]:
    """Every topic of the loop and its dead-letter topic, with partition counts."""
    out: dict[str, int] = {}
    for topic, spec in TOPIC_SPECS.items():
        out[str(topic)] = spec.partitions
        out[dead_letter(topic)] = DLT_PARTITIONS
    return out
