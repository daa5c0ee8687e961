"""Pure decisions of the judge: ports, ids, and how evaluator scores become one judgement.

No I/O here: the endpoint, the embedder and the store are `Protocol`s implemented in
`adapters.py`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from uuid import UUID

from raftloop_core.events import CriterionScore, InteractionJudged
from raftloop_core.pairwise import Completion

JUDGEMENT_NAMESPACE = uuid.UUID("6c1f5d0e-5b7e-4a53-9d3c-2f4c1c3b7a10")
SCALE_MIN, SCALE_MAX = 1.0, 5.0

# Which reference evaluator checks which LLM criterion: their gap is "disagreement".
REFERENCE_PAIRS: dict[str, str] = {
    "ref_groundedness": "groundedness",
    "ref_relevance": "helpfulness",
    "ref_agreement": "correctness",
}
REFERENCE_CRITERIA = tuple(REFERENCE_PAIRS)


class ChatEndpoint(Protocol):
    """An OpenAI-compatible chat endpoint."""

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        top_logprobs: int,
        seed: int | None = None,
    ) -> Completion:
        """One chat completion, asking for logprobs."""
        ...


class Embedder(Protocol):
    """Sentence embeddings, L2-normalised."""

    async def encode(self, texts: list[str]) -> list[list[float]]:
        """Embed `texts` (unit vectors)."""
        ...


@dataclass(frozen=True)
class Reference:
    """An approved answer to a question, kept for agreement checks."""

    reference_id: str
    tenant: str
    question: str
    answer: str
    embedding: list[float]
    # When it was stored: the newest references are the ones kept (`JUDGE_REFERENCES_LIMIT`).
    at: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True)
class LabelRecord:
    """A reviewer's verdict joined with what the judge said about the same interaction."""

    review_id: str
    interaction_id: str
    approved: bool
    features: dict[str, float]
    judge_pass: dict[str, bool]
    reviewer_pass: dict[str, bool]
    slices: dict[str, str] = field(default_factory=dict)


class ReferenceStore(Protocol):
    """Where approved answers are kept for good; the in-memory index is rebuilt from it."""

    def add_reference(self, reference: Reference) -> bool:
        """Store an approved answer; False when already stored."""
        ...

    def references(self, tenant: str, limit: int = 5000) -> list[Reference]:
        """The newest approved answers of a tenant."""
        ...

    def reference_count(self, tenant: str) -> int:
        """How many approved answers a tenant has (rows are only ever added)."""
        ...

    def newest_reference_ids(self, tenant: str, limit: int) -> tuple[list[str], int]:
        """The ids of a tenant's newest `limit` answers, newest first, and the tenant's total.

        Both come from one statement, so the total counts exactly the rows the ids were
        chosen from.
        """
        ...

    def references_by_id(self, tenant: str, ids: Sequence[str]) -> list[Reference]:
        """These answers of this tenant (any order; ids of other tenants are not returned)."""
        ...


class JudgeStore(ReferenceStore, Protocol):
    """The judge's durable state: judgements, processed ids, labels, references, calibrator."""

    def is_processed(self, event_id: UUID) -> bool:
        """Whether an input event was fully handled."""
        ...

    def mark_processed(self, event_id: UUID, output_id: UUID) -> None:
        """Record that an input event was handled and its judgement published."""
        ...

    def saved_judgement(self, output_id: UUID) -> InteractionJudged | None:
        """A judgement already computed (perhaps not yet published) under `output_id`."""
        ...

    def save_judgement(self, event: InteractionJudged) -> None:
        """Keep a judgement before it is published, so a restart republishes the same one."""
        ...

    def latest_judgement(self, interaction_id: UUID) -> InteractionJudged | None:
        """The newest judgement of an interaction."""
        ...

    def add_label(self, label: LabelRecord) -> bool:
        """Store a label; False when this review was already stored."""
        ...

    def recent_labels(self, limit: int, tenant: str | None = None) -> list[LabelRecord]:
        """The newest `limit` labels (of one tenant, or of all), oldest first."""
        ...

    def save_calibrator(self, payload: str) -> None:
        """Persist the fitted calibrator (JSON)."""
        ...

    def load_calibrator(self) -> str | None:
        """The persisted calibrator (JSON), if any."""
        ...


def judge_version(tag: str, model: str, digest: str) -> str:
    """The judge version: changes whenever the rubrics, the model or the tag change."""
    return f"judge-{tag}-{digest}-{model.replace('/', '_')[:40]}"


def output_event_id(interaction_id: UUID, revision: int, version: str) -> UUID:
    """The deterministic id of the one judgement per (interaction, revision, judge version)."""
    return uuid.uuid5(JUDGEMENT_NAMESPACE, f"{interaction_id}:{revision}:{version}")


def clamp_score(value: float) -> float:
    """Keep a score on the 1-5 scale."""
    return min(SCALE_MAX, max(SCALE_MIN, value))


def unit_to_score(value: float) -> float:
    """Map a support fraction in [0, 1] onto the 1-5 scale."""
    return clamp_score(SCALE_MIN + (SCALE_MAX - SCALE_MIN) * min(1.0, max(0.0, value)))


def overall_score(scores: Sequence[CriterionScore], weights: dict[str, float]) -> float:
    """Weighted mean of the LLM criteria (reference evaluators inform uncertainty only)."""
    llm = [s for s in scores if s.criterion in weights]
    total = sum(weights[s.criterion] for s in llm)
    if not llm or total <= 0:
        raise ValueError("no LLM criterion scores to combine")
    return sum(weights[s.criterion] * s.score for s in llm) / total


def disagreement(scores: Sequence[CriterionScore]) -> float | None:
    """Mean absolute gap between each reference evaluator and the LLM criterion it checks."""
    by_name = {s.criterion: s.score for s in scores}
    gaps = [
        abs(by_name[ref] - by_name[llm])
        for ref, llm in REFERENCE_PAIRS.items()
        if ref in by_name and llm in by_name
    ]
    return sum(gaps) / len(gaps) if gaps else None


def uncertainty(scores: Sequence[CriterionScore], weights: dict[str, float]) -> float:
    """Root of mean squared spread (LLM score distributions) plus squared evaluator disagreement.

    Both parts are in score points, so the result reads as "give or take this many points".
    """
    spreads = [s.spread for s in scores if s.criterion in weights and s.spread is not None]
    spread = math.sqrt(sum(x * x for x in spreads) / len(spreads)) if spreads else 0.0
    gap = disagreement(scores) or 0.0
    return math.sqrt(spread * spread + gap * gap)


def features(
    scores: Sequence[CriterionScore],
    overall: float,
    unc: float,
    flagged: bool,
    criteria: Sequence[str],
) -> dict[str, float]:
    """The judge features the calibrator learns from (missing criteria imputed with overall)."""
    by_name = {s.criterion: s.score for s in scores}
    out = {"overall": overall, "uncertainty": unc, "flagged": 1.0 if flagged else 0.0}
    for name in (*criteria, *REFERENCE_CRITERIA):
        out[f"score_{name}"] = by_name.get(name, overall)
    return out


def judge_passes(
    scores: Sequence[CriterionScore], overall: float, threshold: float
) -> dict[str, bool]:
    """Per-criterion pass/fail as the judge sees it, plus `overall`."""
    out = {s.criterion: s.score >= threshold for s in scores}
    out["overall"] = overall >= threshold
    return out
