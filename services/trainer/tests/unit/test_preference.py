"""Preference pairs from corrections: lineage, refusals, the recipe setting and its report."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from raftloop_core.prompting import ANSWER_MARKER, BEGIN_QUOTE, END_QUOTE
from raftloop_trainer.domain import PendingData, due_reason, waiting_for
from raftloop_trainer.preference import build_pairs, pair_refusal
from raftloop_trainer.raft import Chunk, RaftExample, RaftSource, build_example
from raftloop_trainer.report import markdown, preference_metrics
from raftloop_trainer.settings import TrainerSettings
from raftloop_trainer.train import DpoParams, TrainConfig

ORACLE = Chunk("refunds#0", "Refunds are issued within five business days. Fees are kept.")
SOURCE = RaftSource(
    "ex-1",
    "How long do refunds take?",
    "Five business days.",
    (ORACLE,),
    ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}),
)


def built(p_oracle: float = 1.0) -> list[RaftExample]:
    distractor = Chunk("support#0", "Support is open Monday to Friday.")
    return [build_example(SOURCE, [distractor], rng=random.Random(0), p_oracle=p_oracle)]


def test_a_correction_gives_a_pair_on_the_sft_prompt_with_its_lineage() -> None:
    [example] = built()
    row = {"rejected_answer": "About a week.", "interaction_id": "iid-1", "review_id": "rev-1"}
    [pair] = build_pairs([example], [SOURCE], {"ex-1": row})
    assert (pair.example_id, pair.interaction_id, pair.review_id) == ("ex-1", "iid-1", "rev-1")
    # The prompt is the SFT example's: system turn, history, documents and question.
    assert list(pair.prompt) == example.prompt
    assert pair.prompt[1:3] == SOURCE.history
    assert ORACLE.text in pair.prompt[-1]["content"]
    assert pair.chosen == example.target
    assert pair.chosen.endswith(f"{ANSWER_MARKER} Five business days.")
    assert pair.rejected.endswith(f"{ANSWER_MARKER} About a week.")
    # Both sides quote the oracle the same way: they differ only in the replaced answer.
    quote = f"{BEGIN_QUOTE}Refunds are issued within five business days.{END_QUOTE}"
    assert quote in pair.chosen
    assert quote in pair.rejected


def test_a_served_raft_answer_is_rejected_by_its_final_answer_without_its_dropped_quote() -> None:
    [example] = built(p_oracle=0.0)  # the oracle was dropped from this prompt
    served = f"The documents say: {BEGIN_QUOTE}Fees are kept.{END_QUOTE}\n{ANSWER_MARKER} A week."
    row = {"rejected_answer": served, "interaction_id": "iid-1", "review_id": None}
    [pair] = build_pairs([example], [SOURCE], {"ex-1": row})
    assert BEGIN_QUOTE not in pair.rejected
    assert pair.rejected.endswith(f"{ANSWER_MARKER} A week.")


def test_examples_without_a_stored_pair_give_none() -> None:
    assert build_pairs(built(), [SOURCE], {}) == []


def test_a_pair_of_equal_answers_is_refused_whitespace_aside() -> None:
    reason = pair_refusal("corrected", "Five  business\ndays.", " Five business days. ")
    assert reason is not None
    assert "equals" in reason
    served = f"The documents say: {BEGIN_QUOTE}x{END_QUOTE}\n{ANSWER_MARKER} Five business days."
    assert pair_refusal("corrected", "Five business days.", served) is not None
    assert pair_refusal("corrected", "Five business days.", "About a week.") is None


def test_an_approval_gives_no_pair() -> None:
    assert pair_refusal("approved", "Five days.", None) is not None
    assert pair_refusal("auto_accepted", "Five days.", None) is not None
    # A rejected answer on anything but a correction is not trusted: nothing replaced it.
    reason = pair_refusal("approved", "Five days.", "About a week.")
    assert reason is not None
    assert "only a correction" in reason


def test_the_recipe_defaults_to_sft_and_an_unknown_one_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert TrainerSettings().recipe == "sft"
    monkeypatch.setenv("TRAINER_RECIPE", "sft+dpo")
    monkeypatch.setenv("TRAINER_DPO", '{"beta": 0.2, "epochs": 1}')
    monkeypatch.setenv("TRAINER_MIN_PAIRS", "3")
    settings = TrainerSettings()
    assert (settings.recipe, settings.dpo.beta, settings.min_pairs) == ("sft+dpo", 0.2, 3)
    monkeypatch.setenv("TRAINER_RECIPE", "ppo")
    with pytest.raises(ValidationError, match="'sft', 'sft\\+dpo' or 'dpo'"):
        TrainerSettings()
    monkeypatch.setenv("TRAINER_RECIPE", "dpo")
    monkeypatch.setenv("TRAINER_DPO", '{"beta": 0.2, "gamma": 1}')
    with pytest.raises(ValidationError, match="gamma"):
        TrainerSettings()
    monkeypatch.setenv("TRAINER_DPO", "{}")
    monkeypatch.setenv("TRAINER_MIN_PAIRS", "0")
    with pytest.raises(ValidationError, match="min_pairs"):
        TrainerSettings()


def test_the_report_says_when_the_dpo_stage_was_skipped_and_what_it_did() -> None:
    assert preference_metrics(None) == {}
    reason = "2 preference pairs, fewer than the 8 the DPO stage needs (TRAINER_MIN_PAIRS)"
    skipped = {"recipe": "sft+dpo", "sft": {}, "dpo": {"state": "skipped", "reason": reason}}
    assert preference_metrics(skipped)["train.dpo.skipped"] == 1.0
    done = {
        "recipe": "dpo",
        "dpo": {"state": "done", "pairs": 9, "from": "base", "beta": 0.1, "steps": 10},
    }
    assert preference_metrics(done) == {
        "train.dpo.pairs": 9.0,
        "train.dpo.skipped": 0.0,
        "train.dpo.steps": 10.0,
    }
    page = {"title": "t", "baseline": "b", "candidate": "c", "sets": {}}
    assert f"DPO stage skipped**: {reason}" in markdown(page | {"preference": skipped})
    assert "DPO on 9 preference pairs from the base" in markdown(page | {"preference": done})


def test_under_the_dpo_recipe_a_due_run_waits_for_enough_pairs() -> None:
    now = datetime.now(UTC)
    settings = TrainerSettings(recipe="dpo", min_pairs=3, min_new_examples=1, min_holdout_items=1)
    policy = settings.trigger_policy()
    pending = PendingData("acme", "tiny", 5, now, holdout_examples=1, pairs=2)
    assert due_reason(pending, policy, now) is None
    assert "2 of the 3 preference pairs" in (waiting_for(pending, policy) or "")
    assert due_reason(replace(pending, pairs=3), policy, now) is not None
    # The other recipes train on examples alone and never wait for pairs.
    sft = TrainerSettings(min_pairs=3, min_new_examples=1, min_holdout_items=1).trigger_policy()
    assert due_reason(pending, sft, now) is not None


def test_a_weighted_sft_term_joins_the_dpo_loss(tmp_path: Path) -> None:
    from raftloop_trainer.dpo import dpo_arguments

    def config(weight: float) -> TrainConfig:
        return TrainConfig(
            base_model_dir=tmp_path,
            examples_path=tmp_path / "train.jsonl",
            output_dir=tmp_path,
            dpo=DpoParams(sft_weight=weight),
        )

    mixed = dpo_arguments(config(0.5), "cpu")
    assert (mixed.loss_type, mixed.loss_weights) == (["sigmoid", "sft"], [1.0, 0.5])
    plain = dpo_arguments(config(0.0), "cpu")
    assert (plain.loss_type, plain.loss_weights) == (["sigmoid"], None)
    with pytest.raises(ValidationError):
        DpoParams(sft_weight=-1.0)
