import pytest

from raftloop_judge.calibration import Calibrator, agreement, auc, cohen_kappa, fit_calibrator
from raftloop_judge.domain import LabelRecord


def test_kappa_matches_hand_computed_values() -> None:
    assert cohen_kappa([True, True, False, False], [True, True, False, False]) == 1.0
    # observed 0.5, expected 0.5 -> 0
    assert cohen_kappa([True, False, True, False], [True, True, False, False]) == 0.0
    a = [True] * 20 + [False] * 30
    b = [True] * 15 + [False] * 5 + [True] * 10 + [False] * 20
    # po = 0.7, pe = 0.4*0.5 + 0.6*0.5 = 0.5 -> 0.4
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([], []) is None


def test_auc() -> None:
    assert auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auc([0.5, 0.5], [True, False]) == 0.5
    assert auc([0.1], [True]) is None


def label(i: int, approved: bool, judge_ok: bool, human_ok: bool, tenant: str) -> LabelRecord:
    return LabelRecord(
        review_id=str(i),
        interaction_id=str(i),
        approved=approved,
        features={"overall": 4.0 if approved else 2.0},
        judge_pass={"overall": judge_ok, "tone": judge_ok},
        reviewer_pass={"tone": human_ok},
        slices={"tenant": tenant},
    )


def test_agreement_per_criterion_and_slice() -> None:
    labels = [label(i, i % 2 == 0, i % 2 == 0, i % 2 == 0, "a" if i < 4 else "b") for i in range(8)]
    figures = agreement(labels)
    criteria, slices = figures["criteria"], figures["slices"]
    assert isinstance(criteria, dict)
    assert isinstance(slices, dict)
    assert figures["window"] == 8
    assert criteria["tone"] == {"n": 8, "accuracy": 1.0, "kappa": 1.0}
    assert criteria["overall"]["accuracy"] == 1.0
    assert slices["tenant"]["a"]["tone"]["n"] == 4


def test_calibrator_needs_both_outcomes_and_round_trips_as_json() -> None:
    assert fit_calibrator([label(0, True, True, True, "a")]) is None
    labels = [label(i, i % 2 == 0, True, True, "a") for i in range(10)]
    fitted = fit_calibrator(labels)
    assert fitted is not None
    again = Calibrator.from_json(fitted.to_json())
    assert again.predict({"overall": 4.0}) > 0.5 > again.predict({"overall": 2.0})
