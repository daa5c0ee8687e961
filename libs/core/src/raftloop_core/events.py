"""Pydantic v2 models of every event in the loop.

Rules (DESIGN.md): every event carries `event_id`, `occurred_at`, `schema_version`, its tenant and
the ids that trace it back. Within a version only optional fields are added; consumers ignore
fields they do not know (`extra="ignore"`). `tests/unit/test_event_schemas.py` snapshots every
schema so that a change shows up in review.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, TypeAlias
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from raftloop_core.topics import TOPIC_SPECS, Topic

TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
Tenant = Annotated[str, Field(pattern=TENANT_PATTERN, description="Tenant slug.")]
AdapterId = Annotated[
    str, Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of adapter_model.safetensors.")
]
DEFAULT_TENANT = "default"


class Model(BaseModel):
    """Base of every value object carried inside events."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Event(Model):
    """Fields that every event has."""

    event_id: UUID = Field(default_factory=uuid4)
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    schema_version: Literal[1] = 1
    tenant: Tenant = DEFAULT_TENANT


# ---------------------------------------------------------------- value objects


class ChatMessage(Model):
    """One turn of a conversation."""

    role: Literal["system", "user", "assistant"]
    content: str


class RetrievedChunk(Model):
    """A knowledge-base chunk that rag returned for a question."""

    chunk_id: str
    document_id: str
    text: str
    score: float
    title: str | None = None
    source: str | None = None
    chunk_index: int | None = None


class GenerationParams(Model):
    """Sampling parameters the client asked for."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)


class TokenUsage(Model):
    """Token counts of one completion."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class Feedback(Model):
    """A chatbot user's verdict on one answer."""

    feedback_id: UUID
    rating: int = Field(description="-1/+1 for thumbs, 1..5 for stars.")
    scale: Literal["thumbs", "stars"] = "thumbs"
    correction: str | None = None
    comment: str | None = None

    @property
    def negative(self) -> bool:
        """Whether the user disliked the answer."""
        return self.rating < 0 if self.scale == "thumbs" else self.rating <= 2


class Flag(Model):
    """A reason ingest (or the judge) marked an interaction as suspicious."""

    code: str = Field(description="Machine-readable kind, e.g. `prompt_injection`.")
    reason: str = Field(description="Human-readable explanation for reviewers.")
    source: Literal["ingest", "judge"] = "ingest"


class Interaction(Model):
    """One cleaned interaction: redacted text plus what ingest found out about it."""

    interaction_id: UUID
    conversation_id: str
    key_id: str | None = None
    model: str
    base_model: str
    adapter_id: AdapterId | None = None
    messages: list[ChatMessage]
    answer: str
    retrieved: list[RetrievedChunk] = Field(default_factory=list)
    feedback: Feedback | None = None
    pii_types: list[str] = Field(default_factory=list, description="Kinds of PII redacted.")
    flags: list[Flag] = Field(default_factory=list)
    duplicate_of: UUID | None = Field(
        default=None, description="Earlier interaction with the same normalised question."
    )
    question_hash: str | None = None
    answered_at: AwareDatetime | None = None

    @property
    def question(self) -> str:
        """The last user turn."""
        return next((m.content for m in reversed(self.messages) if m.role == "user"), "")


class CriterionScore(Model):
    """The judge's score for one rubric criterion, on a 1-5 scale."""

    criterion: str
    score: float
    spread: float | None = Field(default=None, description="Std-dev of the score distribution.")
    rationale: str | None = None
    evaluator: str = "llm"


class Judgement(Model):
    """What the judge concluded about one interaction."""

    judge_version: str
    scores: list[CriterionScore] = Field(default_factory=list)
    overall: float | None = None
    uncertainty: float | None = None
    approval_probability: float | None = Field(
        default=None, description="Calibrated probability that a reviewer approves."
    )
    rationale: str | None = None
    error: str | None = Field(default=None, description="Set when judging failed; no scores then.")
    flags: list[Flag] = Field(default_factory=list)


class CriterionLabel(Model):
    """A reviewer's pass/fail label for one rubric criterion."""

    criterion: str
    passed: bool


# ---------------------------------------------------------------- events


class ChatCompleted(Event):
    """The gateway answered a chat request (raw: only ingest reads this)."""

    interaction_id: UUID
    conversation_id: str
    key_id: str | None = None
    model: str
    base_model: str
    adapter_id: AdapterId | None = None
    messages: list[ChatMessage]
    answer: str
    finish_reason: str | None = None
    retrieved: list[RetrievedChunk] = Field(default_factory=list)
    params: GenerationParams = Field(default_factory=GenerationParams)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    latency_ms: float | None = None
    aborted: bool = Field(default=False, description="The client went away mid-stream.")
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class FeedbackReceived(Event):
    """A chatbot client sent feedback on an answer."""

    interaction_id: UUID
    key_id: str | None = None
    feedback: Feedback


class InteractionIngested(Event):
    """Ingest validated, redacted, deduplicated and screened an interaction."""

    interaction: Interaction
    source_event_id: UUID = Field(description="The chat-completed event this came from.")
    revision: int = Field(default=1, description="Bumped when late feedback is joined.")


class InteractionJudged(Event):
    """The judge scored an ingested interaction."""

    interaction: Interaction
    judgement: Judgement
    ingested_event_id: UUID
    revision: int = 1


class ReviewCompleted(Event):
    """A reviewer acted on a queued interaction."""

    review_id: UUID
    interaction_id: UUID
    reviewer: str
    action: Literal["approved", "corrected", "rejected", "skipped"]
    final_answer: str | None = None
    reason: str | None = None
    oracle_chunk_ids: list[str] = Field(default_factory=list)
    criterion_labels: list[CriterionLabel] = Field(default_factory=list)
    judge_version: str | None = None
    judge_overall: float | None = None
    approval_probability: float | None = None
    guideline_version: str | None = None


class ExampleCurated(Event):
    """An interaction became a training example (approved or corrected by a human)."""

    example_id: UUID
    interaction_id: UUID
    review_id: UUID | None = None
    source: Literal["approved", "corrected", "auto_accepted"]
    messages: list[ChatMessage] = Field(description="Conversation up to the question.")
    question: str
    answer: str
    oracle_chunks: list[RetrievedChunk] = Field(default_factory=list)
    reviewer: str | None = None
    judge_version: str | None = None
    base_model: str
    adapter_id: AdapterId | None = None
    flags: list[Flag] = Field(default_factory=list)
    rejected_answer: str | None = Field(
        default=None,
        description="For a correction: the model's answer that the reviewer replaced (the "
        "rejected side of a preference pair whose chosen side is `answer`); None otherwise.",
    )


class DocumentSubmitted(Event):
    """A knowledge document's clean text, ready for indexing.

    A document whose text would not fit one broker message is sent as `parts` events in order
    (same key, so one partition keeps them ordered), each with a slice of the text and the
    whole document's `content_hash`.
    """

    action: Literal["submitted"] = "submitted"
    document_id: str
    source: str = Field(description="A label for people (file name), never a server path.")
    title: str
    text: str
    content_hash: str = Field(description="sha256 of the whole document's extracted text.")
    format: Literal["txt", "md", "html", "pdf"]
    metadata: dict[str, str] = Field(default_factory=dict)
    part: int = Field(default=0, ge=0, description="Index of this part of the text, from 0.")
    parts: int = Field(default=1, ge=1, description="How many parts the text was split into.")


class DocumentDeleted(Event):
    """A knowledge document was withdrawn; its chunks must go."""

    action: Literal["deleted"] = "deleted"
    document_id: str
    source: str | None = None


# Both document facts share one topic so that a deletion is never overtaken by its submission.
DocumentEvent: TypeAlias = Annotated[
    DocumentSubmitted | DocumentDeleted, Field(discriminator="action")
]


HOLDOUT_ERRORS_PREFIX = "holdout.errors."
"""`TrainingRunFinished.metrics` keys `holdout.errors.<mode>`: how many of the candidate's
hold-out answers showed each failure mode of the trainer's error analysis."""


class TrainingRunFinished(Event):
    """A training run ended, successfully or not."""

    run_id: str
    base_model: str
    dataset_version: str
    status: Literal["succeeded", "failed"]
    adapter_id: AdapterId | None = None
    train_examples: int = 0
    holdout_examples: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)
    error: str | None = None
    report_path: str | None = None


class AdapterPromoted(Event):
    """The serving alias now points at a new adapter."""

    alias: str = "serving"
    adapter_id: AdapterId
    previous_adapter_id: AdapterId | None = None
    base_model: str
    run_id: str | None = None
    dataset_version: str | None = None
    revision: int = Field(description="Alias revision; consumers ignore older ones.")
    metrics: dict[str, float] = Field(default_factory=dict)


class AdapterRejected(Event):
    """The evaluation gate refused a candidate adapter."""

    alias: str = "serving"
    adapter_id: AdapterId
    base_model: str
    run_id: str | None = None
    dataset_version: str | None = None
    reasons: list[str]
    metrics: dict[str, float] = Field(default_factory=dict)


class AdapterRolledBack(Event):
    """The serving alias was switched back to an earlier adapter (or the base model)."""

    alias: str = "serving"
    from_adapter_id: AdapterId | None
    to_adapter_id: AdapterId | None = Field(description="None means the bare base model.")
    base_model: str
    revision: int
    reason: str | None = None


EVENT_TYPES: dict[Topic, object] = {
    Topic.CHAT_COMPLETED: ChatCompleted,
    Topic.CHAT_FEEDBACK: FeedbackReceived,
    Topic.INTERACTION_INGESTED: InteractionIngested,
    Topic.INTERACTION_JUDGED: InteractionJudged,
    Topic.REVIEW_COMPLETED: ReviewCompleted,
    Topic.EXAMPLE_CURATED: ExampleCurated,
    Topic.KB_DOCUMENT: DocumentEvent,
    Topic.TRAINING_RUN_FINISHED: TrainingRunFinished,
    Topic.ADAPTER_PROMOTED: AdapterPromoted,
    Topic.ADAPTER_REJECTED: AdapterRejected,
    Topic.ADAPTER_ROLLED_BACK: AdapterRolledBack,
}
"""The payload type of each topic (a type or an annotated union)."""


def adapter_for(topic: Topic) -> TypeAdapter[Event]:
    """A pydantic TypeAdapter that parses the payload of `topic`."""
    adapter: TypeAdapter[Event] = TypeAdapter(EVENT_TYPES[topic])  # type: ignore[arg-type]
    return adapter


def event_key(topic: Topic, event: Event) -> bytes:
    """The Kafka key of `event` on `topic`: the id whose order must be kept."""
    field = TOPIC_SPECS[topic].key
    if field == "interaction_id" and isinstance(event, InteractionIngested | InteractionJudged):
        return str(event.interaction.interaction_id).encode()
    value = getattr(event, field)
    return str(value).encode()
