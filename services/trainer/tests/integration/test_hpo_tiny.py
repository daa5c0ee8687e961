"""HPO on the tiny Llama: of two trials it picks the one with the lower validation loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train_tiny import examples_file

from raftloop_trainer.hpo import HPO_FILE, HpoParams, search
from raftloop_trainer.hpo_trial import open_study
from raftloop_trainer.train import ADAPTER_DIR, HPO_ADAPTER_DIR, LoraParams, TrainConfig, train

pytestmark = pytest.mark.integration

# The defaults are hopeless (a learning rate that cannot move LoRA in two epochs); the space holds
# one point only, a learning rate that memorises the three repeated facts, so trial 1 is known.
HOPELESS = LoraParams(
    learning_rate=1e-7, rank=8, alpha=16, epochs=2, batch_size=4, warmup_steps=0, max_length=256
)
GOOD_SPACE = HpoParams(
    trials=2, learning_rate=(1e-2, 1e-2), rank=(16,), alpha_ratio=(2.0,), epochs=(2, 2)
)


def _config(tiny_model_dir: Path, tmp_path: Path, **extra: object) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "base_model_dir": tiny_model_dir,
            "examples_path": examples_file(tmp_path / "train.jsonl", 12),
            "output_dir": tmp_path / "job",
            "params": HOPELESS,
            "device": "cpu",
            **extra,
        }
    )


def test_two_trials_pick_the_lower_validation_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = _config(tiny_model_dir, tmp_path)
    result = search(config, GOOD_SPACE)

    values = {row.number: row.value for row in result.trials}
    assert set(values) == {0, 1}, result.trials
    assert [row.defaults for row in result.trials] == [True, False]
    assert result.default_value == values[0]
    assert result.best_value == min(v for v in values.values() if v is not None) == values[1]
    assert result.beats_defaults
    assert result.best_params["learning_rate"] == pytest.approx(1e-2)
    assert LoraParams.model_validate(result.chosen).rank == 16
    assert (result.train_examples, result.validation_examples) == (8, 4)
    written = json.loads((config.output_dir / HPO_FILE).read_text())
    assert [row["state"] for row in written["trials"]] == ["COMPLETE", "COMPLETE"]
    assert written["beats_defaults"] is True

    # A second start resumes the stored study: its budget is spent, so nothing trains again.
    again = search(config, GOOD_SPACE)
    assert [r.value for r in again.trials] == [r.value for r in result.trials]


def test_train_with_hpo_leaves_the_default_and_the_tuned_adapter(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = _config(tiny_model_dir, tmp_path, hpo=GOOD_SPACE)
    adapter = train(config)

    job = config.output_dir
    assert adapter == job / ADAPTER_DIR
    assert json.loads((job / ADAPTER_DIR / "adapter_config.json").read_text())["r"] == 8
    tuned = json.loads((job / HPO_ADAPTER_DIR / "adapter_config.json").read_text())
    assert tuned["r"] == 16
    assert (job / HPO_ADAPTER_DIR / "adapter_model.safetensors").is_file()
    assert json.loads((job / HPO_FILE).read_text())["state"] == "done"


def test_a_hopeless_trial_is_pruned_after_its_first_epoch(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    good = HOPELESS.model_copy(update={"learning_rate": 1e-2})
    config = _config(tiny_model_dir, tmp_path, params=good)
    space = GOOD_SPACE.model_copy(update={"trials": 3, "learning_rate": (5e-3, 5e-3)})
    # Queued after the defaults: the pruner's median comes from the first two (both good).
    study = open_study(config, space)
    for learning_rate in (5e-3, 1e-7):
        study.enqueue_trial(
            {"learning_rate": learning_rate, "rank": 16, "alpha_ratio": 2.0, "epochs": 2}
        )
    result = search(config, space)

    states = [(row.number, row.state) for row in result.trials]
    assert states == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "PRUNED")]
    assert [row.epochs_done for row in result.trials] == [2, 2, 1]
    assert result.trials[2].value is not None
    assert result.trials[2].value > max(float(r.value or 0) for r in result.trials[:2])
