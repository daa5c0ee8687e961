"""Pure decisions of the trainer: dataset identity, the split, triggers, regression sets, gate."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from raftloop_trainer.metrics import PairedDiff, normalize_answer

HOLDOUT_FRACTION = 0.2
MIN_HOLDOUT_ITEMS = 20
PRIMARY_METRIC = "token_f1"
_HOLDOUT_BUCKETS = 10_000


def is_holdout(example_id: str, fraction: float = HOLDOUT_FRACTION) -> bool:
    """Deterministic hold-out by id hash (about `fraction` of examples); never enters training.

    The split is stored with each example when it arrives, so changing the fraction moves only
    examples that arrive afterwards: nothing that was held out is ever trained on later.
    """
    bucket = int(hashlib.sha256(example_id.encode()).hexdigest(), 16) % _HOLDOUT_BUCKETS
    return bucket < round(fraction * _HOLDOUT_BUCKETS)


def content_key(tenant: str, base_model: str, question: str, answer: str) -> str:
    """Dedupe key: the same normalised question and answer for a tenant and base model."""
    raw = "\x1f".join([tenant, base_model, normalize_answer(question), normalize_answer(answer)])
    return hashlib.sha256(raw.encode()).hexdigest()


def dataset_version(rows: Iterable[Mapping[str, object]]) -> str:
    """Content hash of an example set: sha256 over the canonical JSON of rows sorted by id."""
    canonical = sorted(json.dumps(dict(r), sort_keys=True, default=str) for r in rows)
    digest = hashlib.sha256()
    for line in canonical:
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


# ---------------------------------------------------------------- triggers


@dataclass(frozen=True)
class TriggerPolicy:
    """When a run starts by itself."""

    min_new_examples: int = 50
    max_age: timedelta | None = timedelta(hours=24)
    min_examples_for_age: int = 1
    min_holdout_items: int = 0
    """A run waits until the tenant's hold-out can give the gate enough evidence (the service
    sets TRAINER_MIN_HOLDOUT_ITEMS, 20 by default)."""
    min_pairs: int = 0
    """A run waits for this many preference pairs (TRAINER_MIN_PAIRS under the `dpo` recipe,
    which has nothing else to train on)."""


@dataclass(frozen=True)
class PendingData:
    """New training examples since the last run of one tenant and base model."""

    tenant: str
    base_model: str
    new_examples: int
    oldest_new_at: datetime | None
    holdout_examples: int = 0
    """Every held-out example the tenant has for the base model (they accumulate across runs)."""
    pairs: int = 0
    """Every preference pair the tenant can train on for the base model (held-out ones aside)."""


BUSY = (
    "a training run is already in progress (one at a time per trainer); try again when `busy` "
    "in GET /v1/admin/training is false"
)


@dataclass(frozen=True)
class Started:
    """A run asked for began (its id; None when it ended before it was seen)."""

    run_id: str | None


@dataclass(frozen=True)
class NotStarted:
    """Why a run asked for did not start; `code` is what the API answers with its 409."""

    code: Literal["run_in_progress", "nothing_to_train"]
    reason: str


def due_reason(pending: PendingData, policy: TriggerPolicy, now: datetime) -> str | None:
    """Why a run should start now, or None (not due, or waiting for hold-out examples)."""
    if pending.new_examples >= policy.min_new_examples:
        reason = f"{pending.new_examples} new examples (threshold {policy.min_new_examples})"
    elif (
        policy.max_age is not None
        and pending.oldest_new_at is not None
        and pending.new_examples >= policy.min_examples_for_age
        and now - pending.oldest_new_at >= policy.max_age
    ):
        reason = f"new examples waiting longer than {policy.max_age}"
    else:
        return None
    return None if waiting_for(pending, policy) else reason


def waiting_for(pending: PendingData, policy: TriggerPolicy) -> str | None:
    """Why a due run waits for more data (hold-out items, or pairs for `dpo`), or None."""
    held = holdout_shortfall(pending, policy)
    if held or pending.pairs >= policy.min_pairs:
        return held
    return (
        f"the tenant has {pending.pairs} of the {policy.min_pairs} preference pairs the dpo "
        "recipe needs (TRAINER_MIN_PAIRS); pairs come from corrections in the review UI"
    )


def holdout_shortfall(pending: PendingData, policy: TriggerPolicy) -> str | None:
    """Why a run waits for more held-out examples, or None when the hold-out is big enough.

    A run on a small hold-out cannot tell a real gain from luck (its bootstrap interval is wide),
    so the trigger waits for data instead of training a candidate the gate must reject.
    """
    if pending.holdout_examples >= policy.min_holdout_items:
        return None
    return (
        f"the hold-out has {pending.holdout_examples} of the {policy.min_holdout_items} items the "
        "gate needs (TRAINER_MIN_HOLDOUT_ITEMS); the run waits for more reviewed examples"
    )


# ---------------------------------------------------------------- regression set

MAX_REGRESSION_ITEMS = 500
MAX_REGRESSION_QUESTION_CHARS = 1000
MAX_REGRESSION_ANSWER_CHARS = 500
"""A reference answer longer than the eval's new tokens (80) could never be matched anyway."""
REGRESSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
NO_REGRESSION_CHECK = (
    "not checked for forgetting: no regression items were evaluated (a tenant sets its "
    "general questions with PUT /v1/admin/regression; TRAINER_REGRESSION_ITEMS caps them)"
)


@dataclass(frozen=True)
class RegressionItem:
    """A general question and its reference answer: one item of a tenant's forgetting check."""

    item_id: str
    question: str
    answer: str


def duplicate_ids(ids: Iterable[str]) -> list[str]:
    """The ids that occur more than once, in order of their second occurrence."""
    seen: set[str] = set()
    repeated: list[str] = []
    for item_id in ids:
        if item_id in seen and item_id not in repeated:
            repeated.append(item_id)
        seen.add(item_id)
    return repeated


def regression_set_problem(items: Sequence[RegressionItem]) -> str | None:
    """Why `items` cannot be a tenant's regression set, or None when they can."""
    if len(items) > MAX_REGRESSION_ITEMS:
        return f"{len(items)} regression items; a set holds at most {MAX_REGRESSION_ITEMS}"
    repeated = duplicate_ids(i.item_id for i in items)
    if repeated:
        return f"item ids must be unique within the set; repeated: {', '.join(repeated[:5])}"
    limits = {"question": MAX_REGRESSION_QUESTION_CHARS, "answer": MAX_REGRESSION_ANSWER_CHARS}
    for item in items:
        if not re.fullmatch(REGRESSION_ID_PATTERN, item.item_id):
            return f"item id {item.item_id[:80]!r} must match {REGRESSION_ID_PATTERN}"
        for name, limit in limits.items():
            text = getattr(item, name)
            if not text.strip() or len(text) > limit or "\x00" in text:
                return (
                    f"item {item.item_id!r}: the {name} must be 1 to {limit} characters of "
                    "text, without NUL"
                )
    return None


# ---------------------------------------------------------------- gate


@dataclass(frozen=True)
class GatePolicy:
    """What a candidate must show to be promoted."""

    primary_metric: str = PRIMARY_METRIC
    margin: float = 0.0
    max_regression_drop: float = 0.05
    min_holdout_items: int = MIN_HOLDOUT_ITEMS
    min_judge_win_rate: float | None = None
    """Off by default: a tie counts half, and a small judge model mostly calls ties."""


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict and its reasons."""

    promote: bool
    reasons: list[str] = field(default_factory=list)


def decide(
    holdout: Sequence[PairedDiff],
    regression: Sequence[PairedDiff],
    policy: GatePolicy,
    *,
    judge_win_rate: float | None = None,
) -> GateDecision:
    """Promote when the primary gain's lower CI bound beats the margin and nothing regresses.

    A regression is a drop beyond `max_regression_drop` whose whole confidence interval lies
    below zero.
    """
    reasons: list[str] = []
    primary = next((d for d in holdout if d.metric == policy.primary_metric), None)
    if primary is None or primary.n < policy.min_holdout_items:
        n = primary.n if primary else 0
        reasons.append(
            f"hold-out has {n} items; the gate needs at least {policy.min_holdout_items}"
        )
    elif primary.low <= policy.margin:
        reasons.append(
            f"{primary.metric} gain {primary.diff:+.4f} has CI lower bound {primary.low:+.4f}, "
            f"not above the margin {policy.margin:+.4f}"
        )
    for diff in regression:
        # A drop counts when it is larger than allowed and the interval says it is a drop at
        # all: on 16 general questions a point estimate swings by +-0.05 between two adapters
        # of the same recipe, and a gate that rejects on that noise stalls the loop.
        if -diff.diff > policy.max_regression_drop and diff.high < 0:
            reasons.append(
                f"regression {diff.metric} dropped {-diff.diff:.4f} "
                f"(allowed {policy.max_regression_drop:.4f}; 95% CI of the change "
                f"{diff.low:+.4f} .. {diff.high:+.4f})"
            )
    if policy.min_judge_win_rate is not None:
        if judge_win_rate is None:
            # A required criterion that could not be measured never counts as passed.
            reasons.append(
                f"judge win rate not measured, and the gate requires at least "
                f"{policy.min_judge_win_rate:.3f}"
            )
        elif judge_win_rate < policy.min_judge_win_rate:
            reasons.append(
                f"judge win rate {judge_win_rate:.3f} below {policy.min_judge_win_rate:.3f}"
            )
    # No general questions is no evidence either way: it never rejects, and the reasons say so.
    unchecked = [] if regression else [NO_REGRESSION_CHECK]
    if not reasons:
        assert primary is not None
        reasons.append(
            f"{primary.metric} gain {primary.diff:+.4f} "
            f"(95% CI {primary.low:+.4f}..{primary.high:+.4f}) above margin {policy.margin:+.4f}"
        )
        return GateDecision(True, reasons + unchecked)
    return GateDecision(False, reasons + unchecked)


@dataclass(frozen=True)
class CandidateVerdict:
    """One candidate of a run (a recipe's adapter) and what the gate made of it."""

    label: str
    gain: float
    """The primary metric's hold-out gain over what serves (the point estimate)."""
    decision: GateDecision


def choose_candidate(verdicts: Sequence[CandidateVerdict]) -> int:
    """The index of the candidate a run promotes or rejects: the highest primary gain.

    The choice is made on the point estimate and then gated once, on its own interval, so a run
    with two candidates does not get two chances to pass by luck. Ties go to the earlier one
    (the recipe's own adapter comes first).

    Raises:
        ValueError: no candidates.
    """
    if not verdicts:
        raise ValueError("a run needs at least one candidate to choose from")
    best = 0
    for index, verdict in enumerate(verdicts):
        if verdict.gain > verdicts[best].gain:
            best = index
    return best


def choice_reason(verdicts: Sequence[CandidateVerdict], chosen: int, metric: str) -> str:
    """Why the chosen candidate is the one gated, naming every other candidate's gain."""
    others = ", ".join(f"{v.label} {v.gain:+.4f}" for i, v in enumerate(verdicts) if i != chosen)
    pick = verdicts[chosen]
    return (
        f"candidate {pick.label} chosen: its {metric} gain {pick.gain:+.4f} is the highest "
        f"of {len(verdicts)} (others: {others})"
    )
