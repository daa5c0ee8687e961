"""A training run's line on the ops timeline shows its candidate's hold-out error counts."""

from __future__ import annotations

from raftloop_core import events as ev
from raftloop_hitl.domain import training_summary


def finished(metrics: dict[str, float]) -> ev.TrainingRunFinished:
    return ev.TrainingRunFinished(
        tenant="acme",
        run_id="run-1",
        base_model="smollm2",
        dataset_version="d" * 64,
        status="succeeded",
        train_examples=40,
        metrics=metrics,
    )


def test_the_run_line_lists_the_error_modes_that_occurred() -> None:
    errors = {
        f"{ev.HOLDOUT_ERRORS_PREFIX}repetition": 2.0,
        f"{ev.HOLDOUT_ERRORS_PREFIX}quote_missing": 0.0,
        f"{ev.HOLDOUT_ERRORS_PREFIX}cut_by_limit": 3.0,
    }
    line = training_summary(finished({"holdout.token_f1.diff": 0.2, **errors}))
    assert line == (
        "run run-1 succeeded: 40 examples; candidate's hold-out errors: repetition 2, "
        "cut_by_limit 3"
    )


def test_no_errors_and_no_analysis_read_differently() -> None:
    clean = training_summary(finished({f"{ev.HOLDOUT_ERRORS_PREFIX}repetition": 0.0}))
    assert clean.endswith("; candidate's hold-out errors: none found")
    assert training_summary(finished({})) == "run run-1 succeeded: 40 examples"
