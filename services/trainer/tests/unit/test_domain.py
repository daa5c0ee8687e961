from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from raftloop_trainer.domain import (
    CandidateVerdict,
    GateDecision,
    GatePolicy,
    PendingData,
    TriggerPolicy,
    choice_reason,
    choose_candidate,
    content_key,
    dataset_version,
    decide,
    due_reason,
    holdout_shortfall,
    is_holdout,
)
from raftloop_trainer.metrics import PairedDiff


def diff(metric: str, d: float, low: float, n: int = 20) -> PairedDiff:
    return PairedDiff(metric, 0.3, 0.3 + d, d, low, d + abs(d), n)


def test_holdout_is_a_stable_fifth_by_id_hash() -> None:
    ids = [f"example-{i}" for i in range(2000)]
    held = [i for i in ids if is_holdout(i)]
    assert 0.17 < len(held) / len(ids) < 0.23
    assert held == [i for i in ids if is_holdout(i)]
    quarter = {i for i in ids if is_holdout(i, 0.25)}
    assert 0.22 < len(quarter) / len(ids) < 0.28
    assert set(held) <= quarter  # a larger fraction only adds held-out examples


def test_a_due_run_waits_until_the_holdout_can_judge_it() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    policy = TriggerPolicy(min_new_examples=10, max_age=timedelta(hours=1), min_holdout_items=20)
    small = PendingData("t", "m", 60, now, holdout_examples=12)
    assert due_reason(small, policy, now) is None
    waiting = holdout_shortfall(small, policy) or ""
    assert "12 of the 20" in waiting
    assert "TRAINER_MIN_HOLDOUT_ITEMS" in waiting
    old = PendingData("t", "m", 3, now - timedelta(hours=2), holdout_examples=12)
    assert due_reason(old, policy, now) is None  # the age trigger waits too
    enough = PendingData("t", "m", 60, now, holdout_examples=20)
    assert due_reason(enough, policy, now) == "60 new examples (threshold 10)"
    assert holdout_shortfall(enough, policy) is None


def test_dataset_version_is_a_content_hash_independent_of_order() -> None:
    rows = [{"example_id": "a", "answer": "1"}, {"example_id": "b", "answer": "2"}]
    assert dataset_version(rows) == dataset_version(list(reversed(rows)))
    assert dataset_version(rows) != dataset_version([*rows, {"example_id": "c", "answer": "3"}])
    assert len(dataset_version(rows)) == 64


def test_content_key_ignores_case_and_punctuation_but_not_tenant() -> None:
    a = content_key("acme", "m", "How long do refunds take?", "Five days.")
    assert a == content_key("acme", "m", "how long do refunds take", "five days")
    assert a != content_key("other", "m", "How long do refunds take?", "Five days.")


def test_triggers_by_count_and_by_age() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    policy = TriggerPolicy(min_new_examples=10, max_age=timedelta(hours=1))
    assert due_reason(PendingData("t", "m", 10, now), policy, now) is not None
    assert due_reason(PendingData("t", "m", 3, now), policy, now) is None
    old = now - timedelta(hours=2)
    assert "longer than" in (due_reason(PendingData("t", "m", 3, old), policy, now) or "")
    assert due_reason(PendingData("t", "m", 0, None), policy, now) is None


def test_gate_promotes_a_clear_gain() -> None:
    decision = decide([diff("token_f1", 0.3, 0.2)], [diff("token_f1", 0.0, -0.02)], GatePolicy())
    assert decision.promote, decision.reasons


def test_gate_rejects_when_the_lower_bound_is_not_above_the_margin() -> None:
    decision = decide([diff("token_f1", 0.05, -0.01)], [], GatePolicy())
    assert not decision.promote
    assert "lower bound" in decision.reasons[0]
    decision = decide([diff("token_f1", 0.1, 0.04)], [], GatePolicy(margin=0.05))
    assert not decision.promote


def test_gate_rejects_a_regression_drop_and_a_tiny_holdout() -> None:
    dropped = PairedDiff("rouge_l", 0.3, 0.2, -0.1, -0.2, -0.02, 20)
    decision = decide([diff("token_f1", 0.3, 0.2)], [dropped], GatePolicy())
    assert not decision.promote
    assert "regression rouge_l dropped" in decision.reasons[0]
    decision = decide([diff("token_f1", 0.3, 0.2, n=3)], [], GatePolicy(min_holdout_items=5))
    assert not decision.promote


def test_a_regression_drop_within_its_noise_does_not_reject() -> None:
    # -0.06 on a few general questions, with an interval that reaches above zero: not evidence.
    noisy = PairedDiff("token_f1", 0.18, 0.12, -0.06, -0.14, 0.03, 16)
    assert decide([diff("token_f1", 0.3, 0.2)], [noisy], GatePolicy()).promote
    clear = PairedDiff("token_f1", 0.18, 0.08, -0.10, -0.16, -0.04, 16)
    decision = decide([diff("token_f1", 0.3, 0.2)], [clear], GatePolicy())
    assert not decision.promote
    assert "95% CI of the change -0.1600 .. -0.0400" in decision.reasons[0]


def test_gate_checks_the_judge_win_rate_when_configured() -> None:
    policy = GatePolicy(min_judge_win_rate=0.5)
    assert not decide([diff("token_f1", 0.3, 0.2)], [], policy, judge_win_rate=0.4).promote
    assert decide([diff("token_f1", 0.3, 0.2)], [], policy, judge_win_rate=0.6).promote


def test_the_candidate_with_the_highest_gain_is_gated_even_if_another_passes() -> None:
    verdicts = [
        CandidateVerdict("sft+dpo", 0.12, GateDecision(False, ["lower bound -0.01"])),
        CandidateVerdict("sft", 0.10, GateDecision(True, ["passes"])),
        CandidateVerdict("sft (tuned)", 0.15, GateDecision(False, ["lower bound -0.02"])),
    ]
    # One gate per run: the point estimate picks, then only the pick's interval decides.
    assert choose_candidate(verdicts) == 2
    reason = choice_reason(verdicts, 2, "token_f1")
    assert reason.startswith("candidate sft (tuned) chosen: its token_f1 gain +0.1500")
    assert "sft+dpo +0.1200" in reason
    assert "sft +0.1000" in reason


def test_a_tie_goes_to_the_recipes_own_adapter_and_no_candidate_is_refused() -> None:
    tie = [
        CandidateVerdict("sft+dpo", 0.1, GateDecision(True, [])),
        CandidateVerdict("sft", 0.1, GateDecision(True, [])),
    ]
    assert choose_candidate(tie) == 0
    with pytest.raises(ValueError, match="at least one candidate"):
        choose_candidate([])
