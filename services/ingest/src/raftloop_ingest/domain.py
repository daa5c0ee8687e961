"""Pure decisions of ingest: output ids, question hashes, building cleaned interactions.

No I/O here. The ports that the pipeline needs (state store, redaction, publishing) are
declared as Protocols and implemented in `adapters.py` and `redaction.py`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID, uuid5

from raftloop_core.events import (
    ChatCompleted,
    ChatMessage,
    Event,
    Feedback,
    Flag,
    Interaction,
    RetrievedChunk,
)

INGEST_NAMESPACE = UUID("0b8f3f4e-5c1d-4c9a-9a55-7c2e1f6b9d10")
_PLACEHOLDER = re.compile(r"<([a-z_]+)_\d+>")
_NON_WORD = re.compile(r"[^\w<>]+")


def ingested_event_id(source_event_id: UUID, revision: int) -> UUID:
    """The output event id: the same input and revision always give the same id.

    A redelivery after a crash therefore republishes an event that downstream dedupes.
    """
    return uuid5(INGEST_NAMESPACE, f"ingested:{source_event_id}:{revision}")


def normalise_question(text: str) -> str:
    """Case-, accent-, punctuation- and placeholder-number-insensitive form of a question."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = _PLACEHOLDER.sub(r"<\1>", text)
    return " ".join(_NON_WORD.sub(" ", text).split())


def question_hash(tenant: str, question: str) -> str:
    """The near-duplicate key of a (redacted) question within a tenant."""
    return hashlib.sha256(f"{tenant}\x00{normalise_question(question)}".encode()).hexdigest()[:32]


def document_id(tenant: str, source: str) -> str:
    """A knowledge document's id: stable per (tenant, source)."""
    return hashlib.sha256(f"{tenant}\x00{source}".encode()).hexdigest()[:32]


class Scrubber(Protocol):
    """Redaction for one interaction (see `redaction.RedactionSession`)."""

    mapping: dict[str, str]
    types: set[str]

    def redact(self, text: str) -> str:
        """`text` with PII replaced by placeholders."""
        ...


class Scrubbers(Protocol):
    """Makes a Scrubber per interaction."""

    def session(self, scope: str, known: dict[str, str] | None = None) -> Scrubber:
        """A scrubber seeded with placeholders already given out for `scope`."""
        ...


@dataclass(frozen=True)
class StoredInteraction:
    """What ingest remembers about an interaction it published (redacted only)."""

    interaction: Interaction
    tenant: str
    source_event_id: UUID
    revision: int
    mapping: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PendingFeedback:
    """Feedback that arrived before its interaction (redacted), with the sender's tenant.

    `tenant` is None only for feedback parked before ingest recorded it.
    """

    interaction_id: UUID
    feedback: Feedback
    mapping: dict[str, str]
    tenant: str | None = None


class TenantMismatch(Exception):
    """Feedback names an interaction of another tenant: it is dead-lettered, never joined."""

    def __init__(self, interaction_id: UUID, sender: str, owner: str) -> None:
        super().__init__(
            f"feedback of tenant {sender!r} names interaction {interaction_id} of tenant "
            f"{owner!r}; not joined. A key may rate only its own tenant's answers: check the "
            "gateway that published it"
        )
        self.sender = sender
        self.owner = owner


def check_feedback_tenant(interaction_id: UUID, sender: str, owner: str | None) -> None:
    """Refuse to join feedback into another tenant's interaction (None: owner unknown).

    Raises:
        TenantMismatch: the feedback's tenant is not the interaction's.
    """
    if owner is not None and sender != owner:
        raise TenantMismatch(interaction_id, sender, owner)


@dataclass(frozen=True)
class BatchState:
    """The store's view of a batch of chat events: already ingested ids, parked feedback."""

    existing: set[UUID]
    pending: dict[UUID, PendingFeedback]


class IngestStore(Protocol):
    """Durable state: processed interactions, the feedback join, question hashes, documents."""

    def get(self, interaction_id: UUID) -> StoredInteraction | None:
        """The interaction as last published, if any."""
        ...

    def pending(self, interaction_id: UUID) -> PendingFeedback | None:
        """Feedback waiting for its interaction."""
        ...

    def feedback_seen(self, event_id: UUID) -> bool:
        """Whether this feedback event was already processed."""
        ...

    def save_ingested(self, stored: StoredInteraction, *, feedback_event_id: UUID | None) -> None:
        """Record a published revision (clears pending feedback, keeps the question hash)."""
        ...

    def lookup_batch(self, ids: list[UUID]) -> BatchState:
        """Which of `ids` were ingested before, and the feedback parked for the others."""
        ...

    def firsts(self, tenant: str, hashes: list[str]) -> dict[str, UUID]:
        """The first interaction seen with each of these question hashes."""
        ...

    def save_many(self, stored: list[StoredInteraction]) -> None:
        """Record first revisions of new interactions in one transaction."""
        ...

    def save_pending(self, pending: PendingFeedback, *, feedback_event_id: UUID) -> None:
        """Park feedback until its interaction arrives."""
        ...

    def document_hash(self, doc_id: str) -> str | None:
        """Content hash of the document as last published, if any."""
        ...

    def save_document(self, doc_id: str, *, tenant: str, source: str, content_hash: str) -> None:
        """Record a published document."""
        ...

    def has_document(self, doc_id: str, *, tenant: str) -> bool:
        """Whether the tenant has this document (another tenant's is unknown here)."""
        ...

    def delete_document(self, doc_id: str, *, tenant: str) -> bool:
        """Forget a document of the tenant; whether it was known."""
        ...


Publish = Callable[[Event], Coroutine[Any, Any, None]]
"""Publish one event; returns once the broker acknowledged it."""

PublishMany = Callable[[Sequence[Event]], Coroutine[Any, Any, None]]
"""Publish events in list order; returns once the broker acknowledged every one."""


def redact_feedback(feedback: Feedback, scrub: Scrubber) -> Feedback:
    """Feedback with its free text redacted."""
    return feedback.model_copy(
        update={
            "correction": scrub.redact(feedback.correction) if feedback.correction else None,
            "comment": scrub.redact(feedback.comment) if feedback.comment else None,
        }
    )


def clean_interaction(
    event: ChatCompleted, scrub: Scrubber, *, flags: list[Flag], feedback: Feedback | None
) -> Interaction:
    """The redacted interaction of a chat-completed event (without duplicate marking)."""
    messages = [ChatMessage(role=m.role, content=scrub.redact(m.content)) for m in event.messages]
    retrieved = [
        RetrievedChunk.model_validate(c.model_dump() | {"text": scrub.redact(c.text)})
        for c in event.retrieved
    ]
    answer = scrub.redact(event.answer)
    return Interaction(
        interaction_id=event.interaction_id,
        conversation_id=event.conversation_id,
        key_id=event.key_id,
        model=event.model,
        base_model=event.base_model,
        adapter_id=event.adapter_id,
        messages=messages,
        answer=answer,
        retrieved=retrieved,
        feedback=feedback,
        pii_types=sorted(scrub.types),
        flags=flags,
        answered_at=event.occurred_at,
    )


def screened_texts(event: ChatCompleted) -> list[str]:
    """What the poisoning screen reads: the user turns, then the answer."""
    return [m.content for m in event.messages if m.role == "user"] + [event.answer]
