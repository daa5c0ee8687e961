"""The pure parts of the hyper-parameter search: the split, the space, the summary, settings."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from pydantic import ValidationError

from raftloop_trainer.hpo import (
    DEFAULTS_ATTR,
    HpoParams,
    Split,
    carve_validation,
    summarize,
    too_few_reason,
)
from raftloop_trainer.settings import TrainerSettings
from raftloop_trainer.train import LoraParams, TrainConfig

KEYS = [f"ex-{i}" for i in range(30)]


def test_the_split_is_deterministic_disjoint_and_sized() -> None:
    hpo = HpoParams(validation_fraction=0.2, min_validation=4)
    split = carve_validation(KEYS, hpo)
    assert split == carve_validation(KEYS, hpo)
    assert len(split.validation) == 6  # 20% of 30
    assert set(split.train).isdisjoint(split.validation)
    assert sorted(split.train + split.validation) == list(range(30))


def test_an_example_stays_on_its_side_when_the_file_is_reordered() -> None:
    hpo = HpoParams()
    held = {KEYS[i] for i in carve_validation(KEYS, hpo).validation}
    reordered = list(reversed(KEYS))
    assert {reordered[i] for i in carve_validation(reordered, hpo).validation} == held
    other_seed = {KEYS[i] for i in carve_validation(KEYS, HpoParams(seed=7)).validation}
    assert other_seed != held


def test_the_split_holds_at_least_min_validation_and_too_few_skip() -> None:
    hpo = HpoParams(min_validation=4, validation_fraction=0.1)
    assert len(carve_validation(KEYS[:10], hpo).validation) == 4
    assert too_few_reason(8, hpo) is None
    reason = too_few_reason(7, hpo)
    assert reason is not None
    assert "min_validation" in reason


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("learning_rate", (1e-2, 1e-3), "learning_rate must be a range"),
        ("epochs", (0, 2), "epochs must be a range"),
        ("rank", (), "rank must be one or more"),
        ("alpha_ratio", (0.0,), "alpha_ratio must be one or more"),
        ("search_dpo_beta", True, "searching dpo_beta is not supported"),
        ("unknown", 1, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_space_is_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HpoParams.model_validate({field: value})


def test_settings_read_the_json_and_the_two_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINER_HPO", '{"trials": 5, "minutes": 3, "rank": [4, 8]}')
    assert TrainerSettings().hpo == HpoParams(trials=5, minutes=3, rank=(4, 8))
    monkeypatch.setenv("TRAINER_HPO_TRIALS", "0")
    monkeypatch.setenv("TRAINER_HPO_MINUTES", "1.5")
    assert TrainerSettings().hpo == HpoParams(trials=0, minutes=1.5, rank=(4, 8))


def test_settings_refuse_an_unknown_hpo_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINER_HPO", '{"trails": 5}')
    with pytest.raises(ValidationError, match="trails"):
        TrainerSettings()


def _study(values: list[tuple[dict[str, float | int], float, bool]]) -> optuna.Study:
    study = optuna.create_study()
    space = {
        "learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
        "rank": optuna.distributions.CategoricalDistribution((8, 16)),
        "alpha_ratio": optuna.distributions.CategoricalDistribution((1.0, 2.0)),
        "epochs": optuna.distributions.IntDistribution(1, 3),
    }
    for params, value, defaults in values:
        trial = optuna.trial.create_trial(
            params=params, distributions=space, value=value, user_attrs={DEFAULTS_ATTR: defaults}
        )
        study.add_trial(trial)
    return study


def _config(tmp_path: Path) -> TrainConfig:
    params = LoraParams(rank=16, alpha=32, learning_rate=1e-3, epochs=3)
    return TrainConfig(
        base_model_dir=tmp_path, examples_path=tmp_path, output_dir=tmp_path, params=params
    )


DEFAULTS = {"learning_rate": 1e-3, "rank": 16, "alpha_ratio": 2.0, "epochs": 3}
BETTER = {"learning_rate": 1e-2, "rank": 8, "alpha_ratio": 1.0, "epochs": 2}


def test_a_better_trial_is_chosen_over_the_defaults(tmp_path: Path) -> None:
    study = _study([(DEFAULTS, 2.0, True), (BETTER, 1.5, False)])
    result = summarize(study, _config(tmp_path), Split([0, 1], [2]))
    assert result.beats_defaults
    assert (result.default_value, result.best_value) == (2.0, 1.5)
    chosen = LoraParams.model_validate(result.chosen)
    assert (chosen.learning_rate, chosen.rank, chosen.alpha, chosen.epochs) == (1e-2, 8, 8, 2.0)
    assert [r.number for r in result.trials if r.defaults] == [0]


def test_the_defaults_stay_when_nothing_beats_them(tmp_path: Path) -> None:
    config = _config(tmp_path)
    study = _study([(DEFAULTS, 1.0, True), (BETTER, 1.5, False)])
    result = summarize(study, config, Split([0, 1], [2]))
    assert not result.beats_defaults
    assert LoraParams.model_validate(result.chosen) == config.params
