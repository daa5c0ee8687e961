"""Pure decisions of the review queue: routing, priority, outputs, agreement. No I/O here."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal
from uuid import UUID, uuid5

from pydantic import BaseModel, ConfigDict, Field

from raftloop_core.events import (
    HOLDOUT_ERRORS_PREFIX,
    ExampleCurated,
    Feedback,
    InteractionJudged,
    RetrievedChunk,
    ReviewCompleted,
    TrainingRunFinished,
)

Action = Literal["approved", "corrected", "rejected", "skipped"]
Role = Literal["reviewer", "admin"]
ROLES: tuple[Role, ...] = ("reviewer", "admin")
NAMESPACE = UUID("6b1d3c1e-2f6f-4b7b-9a51-7d0c3e0a4f21")
"""Namespace of the deterministic ids of the events hitl publishes."""


class RoutingPolicy(BaseModel):
    """A tenant's routing thresholds; admins edit them on the routing page."""

    model_config = ConfigDict(frozen=True)

    review_below: float = Field(
        default=0.8, ge=0, le=1, description="Review when approval probability is below this."
    )
    uncertainty_above: float = Field(
        default=0.5, ge=0, description="Review when the judge's uncertainty is above this."
    )
    audit_rate: float = Field(default=0.05, ge=0, le=1, description="Random audit sample.")
    overlap_rate: float = Field(
        default=0.1, ge=0, le=1, description="Share of reviewed items sent to several reviewers."
    )
    overlap_reviewers: int = Field(default=2, ge=2, le=10)
    auto_accept: bool = Field(
        default=False, description="Let the judge alone make training data (off by default)."
    )
    auto_accept_above: float = Field(default=0.95, ge=0, le=1)


@dataclass(frozen=True)
class Route:
    """Where an interaction goes."""

    state: Literal["open", "auto_accepted", "not_routed"]
    reasons: tuple[str, ...]
    priority: float
    required_reviews: int


def sample(interaction_id: UUID, salt: str, rate: float) -> bool:
    """A deterministic coin: the same interaction always gets the same answer (replay-safe)."""
    digest = hashlib.sha256(f"{salt}:{interaction_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def priority(event: InteractionJudged, feedback: Feedback | None) -> float:
    """Active-learning priority: uncertain labels teach most, weighted by impact."""
    p = event.judgement.approval_probability
    uncertainty = 1.0 if p is None else 1.0 - abs(2.0 * p - 1.0)
    impact = 0.0
    if feedback is not None and feedback.negative:
        impact += 0.5
    if feedback is not None and feedback.correction:
        impact += 0.3
    if event.interaction.flags or event.judgement.flags:
        impact += 0.2
    return round(uncertainty + impact, 6)


def route(event: InteractionJudged, policy: RoutingPolicy, feedback: Feedback | None) -> Route:
    """Decide whether a human must look at this interaction, and how urgently."""
    judgement, interaction = event.judgement, event.interaction
    p = judgement.approval_probability
    reasons: list[str] = []
    if judgement.error is not None or p is None:
        reasons.append("judge_unavailable")
    elif p < policy.review_below:
        reasons.append("low_approval")
    if judgement.uncertainty is not None and judgement.uncertainty > policy.uncertainty_above:
        reasons.append("uncertain")
    if feedback is not None and feedback.negative:
        reasons.append("negative_feedback")
    if feedback is not None and feedback.correction:
        reasons.append("user_correction")
    if interaction.flags or judgement.flags:
        reasons.append("flagged")
    if not reasons and sample(interaction.interaction_id, "audit", policy.audit_rate):
        reasons.append("audit_sample")
    prio = priority(event, feedback)
    if reasons:
        overlap = sample(interaction.interaction_id, "overlap", policy.overlap_rate)
        return Route("open", tuple(reasons), prio, policy.overlap_reviewers if overlap else 1)
    if policy.auto_accept and p is not None and p >= policy.auto_accept_above:
        return Route("auto_accepted", ("auto_accept",), prio, 0)
    return Route("not_routed", ("confident",), prio, 0)


@dataclass(frozen=True)
class Decision:
    """One reviewer's submitted decision."""

    review_id: UUID
    reviewer: str
    action: Action
    final_answer: str | None
    reason: str | None
    oracle_chunk_ids: tuple[str, ...]
    guideline_version: int | None


def review_event(event: InteractionJudged, decision: Decision) -> ReviewCompleted:
    """The review-completed event of a decision (deterministic id)."""
    judgement = event.judgement
    return ReviewCompleted(
        event_id=uuid5(NAMESPACE, f"review:{decision.review_id}"),
        tenant=event.tenant,
        review_id=decision.review_id,
        interaction_id=event.interaction.interaction_id,
        reviewer=decision.reviewer,
        action=decision.action,
        final_answer=decision.final_answer,
        reason=decision.reason,
        oracle_chunk_ids=list(decision.oracle_chunk_ids),
        judge_version=judgement.judge_version,
        judge_overall=judgement.overall,
        approval_probability=judgement.approval_probability,
        guideline_version=(
            None if decision.guideline_version is None else str(decision.guideline_version)
        ),
    )


def curated_example(
    event: InteractionJudged, decisions: Sequence[Decision], *, revision: int
) -> ExampleCurated | None:
    """The training example an item yields once all its reviews are in, or None.

    A majority of reviewers must approve or correct it; the latest such decision supplies the
    answer and oracle chunks. Flags are carried along so the trainer can see them. When that
    decision is a correction, the served answer it replaced goes along as `rejected_answer`.
    """
    accepted = [d for d in decisions if d.action in ("approved", "corrected")]
    rejected = [d for d in decisions if d.action == "rejected"]
    if not accepted or len(accepted) <= len(rejected):
        return None
    chosen = accepted[-1]
    interaction = event.interaction
    oracle = _oracle_chunks(interaction.retrieved, chosen.oracle_chunk_ids)
    messages = list(interaction.messages)
    while messages and messages[-1].role == "assistant":
        messages.pop()
    return ExampleCurated(
        event_id=uuid5(NAMESPACE, f"example:{interaction.interaction_id}:{revision}"),
        tenant=event.tenant,
        example_id=uuid5(NAMESPACE, f"example-id:{interaction.interaction_id}:{revision}"),
        interaction_id=interaction.interaction_id,
        review_id=chosen.review_id,
        source="corrected" if chosen.action == "corrected" else "approved",
        messages=messages,
        question=interaction.question,
        answer=chosen.final_answer or interaction.answer,
        oracle_chunks=oracle,
        reviewer=chosen.reviewer,
        judge_version=event.judgement.judge_version,
        base_model=interaction.base_model,
        adapter_id=interaction.adapter_id,
        flags=[*interaction.flags, *event.judgement.flags],
        # The trainer pairs the correction (chosen) with what the model said (rejected).
        rejected_answer=interaction.answer if chosen.action == "corrected" else None,
    )


def auto_example(event: InteractionJudged) -> ExampleCurated:
    """The example of an auto-accepted interaction (only ever for unflagged ones)."""
    interaction = event.interaction
    if interaction.flags or event.judgement.flags:
        raise ValueError("a flagged interaction needs a human approval; it is never auto-accepted")
    return ExampleCurated(
        event_id=uuid5(NAMESPACE, f"example:{interaction.interaction_id}:{event.revision}"),
        tenant=event.tenant,
        example_id=uuid5(NAMESPACE, f"example-id:{interaction.interaction_id}:{event.revision}"),
        interaction_id=interaction.interaction_id,
        source="auto_accepted",
        messages=[m for m in interaction.messages if m.role != "assistant"],
        question=interaction.question,
        answer=interaction.answer,
        judge_version=event.judgement.judge_version,
        base_model=interaction.base_model,
        adapter_id=interaction.adapter_id,
    )


def _oracle_chunks(chunks: Sequence[RetrievedChunk], ids: Sequence[str]) -> list[RetrievedChunk]:
    wanted = set(ids)
    return [c for c in chunks if c.chunk_id in wanted]


# ---------------------------------------------------------------- agreement


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items (None when undefined)."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else None
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(ratings: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa over items that each got the same number (>= 2) of ratings."""
    if not ratings:
        return None
    m = len(ratings[0])
    if m < 2 or any(len(r) != m for r in ratings):
        return None
    n = len(ratings)
    totals: Counter[str] = Counter()
    p_items = 0.0
    for item in ratings:
        counts = Counter(item)
        totals.update(counts)
        p_items += (sum(c * c for c in counts.values()) - m) / (m * (m - 1))
    p_bar = p_items / n
    p_e = sum((c / (n * m)) ** 2 for c in totals.values())
    if p_e >= 1.0:
        return 1.0 if p_bar == 1.0 else None
    return (p_bar - p_e) / (1.0 - p_e)


def pairwise_kappas(labels: dict[int, dict[str, str]]) -> list[tuple[str, str, int, float | None]]:
    """Cohen's kappa of every reviewer pair over the items both labelled."""
    reviewers = sorted({r for by in labels.values() for r in by})
    out = []
    for x, y in combinations(reviewers, 2):
        common = [by for by in labels.values() if x in by and y in by]
        if common:
            kappa = cohen_kappa([by[x] for by in common], [by[y] for by in common])
            out.append((x, y, len(common), kappa))
    return out


def training_summary(event: TrainingRunFinished) -> str:
    """A training run's line on the ops timeline, with its candidate's hold-out error counts.

    The counts are the run's `holdout.errors.<mode>` metrics (the trainer's error analysis);
    only the modes that occurred are listed, and a run without them (a failed one) has none.
    """
    summary = f"run {event.run_id} {event.status}: {event.train_examples} examples"
    counts = {
        key.removeprefix(HOLDOUT_ERRORS_PREFIX): int(value)
        for key, value in event.metrics.items()
        if key.startswith(HOLDOUT_ERRORS_PREFIX)
    }
    if not counts:
        return summary
    found = ", ".join(f"{mode} {n}" for mode, n in counts.items() if n) or "none found"
    return f"{summary}; candidate's hold-out errors: {found}"


def accept_label(action: str) -> str:
    """Collapse a review action to accept/reject for judge-vs-human agreement."""
    return "reject" if action == "rejected" else "accept"


@dataclass(frozen=True)
class Backoff:
    """Sign-in delays after repeated failures: none for the first `free`, then doubling to a cap.

    A cap, not a lockout: a flood of wrong passwords slows its sender, and the account's own
    cap stays short so the real user still gets in (#17).
    """

    free: int = 5
    first_s: float = 1.0
    max_s: float = 900.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the last attempt once `failures` attempts have failed."""
        if failures < self.free:
            return 0.0
        return min(self.first_s * 2.0 ** min(failures - self.free, 60), self.max_s)
