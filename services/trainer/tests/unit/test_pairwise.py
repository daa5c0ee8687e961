from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from raftloop_core.pairwise import PairVerdict
from raftloop_trainer.domain import GatePolicy, decide
from raftloop_trainer.evaluate import EvalConfig, Variant, pairwise_summary
from raftloop_trainer.judging import JudgeConfig
from raftloop_trainer.metrics import PairedDiff
from raftloop_trainer.pairwise import win_rate
from raftloop_trainer.report import markdown, pairwise_metrics, report_payload


def verdict(outcome: str, consistent: bool = True) -> PairVerdict:
    return PairVerdict(outcome, consistent, 0.5, 0.5)  # type: ignore[arg-type]


def test_win_rate_counts_a_tie_as_half_and_leaves_unjudged_items_out() -> None:
    verdicts = [verdict("candidate")] * 3 + [verdict("baseline"), verdict("tie"), None, None]
    rate = win_rate(verdicts)
    assert rate.rate == pytest.approx((3 + 0.5) / 5)
    assert (rate.wins, rate.losses, rate.ties, rate.unjudged, rate.n) == (3, 1, 1, 2, 5)
    assert rate.low <= rate.rate <= rate.high
    assert 0.0 <= rate.low <= rate.high <= 1.0


def test_all_ties_is_exactly_one_half_with_no_spread() -> None:
    rate = win_rate([verdict("tie", consistent=False)] * 10)
    assert (rate.rate, rate.low, rate.high) == (0.5, 0.5, 0.5)
    assert rate.inconsistent == 10


def test_win_rate_ci_is_reproducible_and_narrows_with_more_items() -> None:
    few = [verdict("candidate"), verdict("baseline")] * 4
    many = few * 20
    assert win_rate(few) == win_rate(few)
    assert (win_rate(many).high - win_rate(many).low) < (win_rate(few).high - win_rate(few).low)


def test_win_rate_refuses_to_guess_without_any_verdict() -> None:
    with pytest.raises(ValueError, match="none of the 3 pairs"):
        win_rate([None, None, None])


def _diff() -> PairedDiff:
    return PairedDiff("token_f1", 0.2, 0.5, 0.3, 0.2, 0.4, 20)


def test_gate_requires_a_measured_win_rate_only_when_configured() -> None:
    assert decide([_diff()], [], GatePolicy()).promote  # off by default
    required = GatePolicy(min_judge_win_rate=0.5)
    unmeasured = decide([_diff()], [], required, judge_win_rate=None)
    assert not unmeasured.promote
    assert "not measured" in unmeasured.reasons[0]
    assert decide([_diff()], [], required, judge_win_rate=0.5).promote
    assert not decide([_diff()], [], required, judge_win_rate=0.45).promote


def test_summary_records_why_the_win_rate_is_missing() -> None:
    assert pairwise_summary({}, not_measured="judge off") == {
        "measured": False,
        "reason": "judge off",
    }
    result = {
        "pairwise": {
            "judge": "local:m",
            "baseline": "base",
            "candidate": "new",
            "verdicts": [{"item_id": "a", "error": "no winner"}] * 2,
        }
    }
    summary = pairwise_summary(result)
    assert summary["measured"] is False
    assert "none of the 2 pairs" in summary["reason"]
    assert "no winner" in summary["reason"]
    assert pairwise_metrics(summary) == {}


def test_summary_and_report_of_a_measured_win_rate() -> None:
    verdicts = [
        {"item_id": "a", "outcome": "candidate", "consistent": True, "first": 0.9, "second": 0.8},
        {"item_id": "b", "outcome": "tie", "consistent": False, "first": 0.9, "second": 0.1},
        {"item_id": "c", "error": "no winner"},
    ]
    result = {
        "pairwise": {"judge": "local:m", "baseline": "b", "candidate": "c", "verdicts": verdicts}
    }
    summary = pairwise_summary(result)
    assert summary["measured"] is True
    assert summary["win_rate"] == 0.75
    assert (summary["wins"], summary["ties"], summary["unjudged"]) == (1, 1, 1)
    assert pairwise_metrics(summary)["holdout.judge_win_rate"] == 0.75
    payload = report_payload(
        title="t", baseline="b", candidate="c", diffs={}, decision=None, pairwise=summary
    )
    md = markdown(payload)
    assert "## pairwise judge" in md
    assert "| 0.7500 |" in md


def test_eval_config_refuses_a_judge_pair_that_names_no_variant(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="must name two of the variants"):
        EvalConfig(
            base_model_dir=tmp_path,
            items=[],
            variants=[Variant(name="base")],
            output_dir=tmp_path,
            judge=JudgeConfig(kind="local"),
            judge_pairs=[("base", "missing")],
        )
