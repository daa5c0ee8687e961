"""Hyper-parameter search with Optuna over the SFT stage's LoRA parameters (issue #20).

The CPU defaults (`settings.CPU_DEFAULT_LORA`) were tuned by hand on one dataset; another
tenant's data may want another learning rate, rank or number of epochs. Trials are judged on a
validation split carved from the training examples, never from the hold-out, so the gate's
hold-out stays an unbiased test of whichever adapter the runner compares. The first trial is
always the defaults, so the table holds the value the search has to beat.

The study lives in `<output_dir>/hpo.sqlite3`: a killed job resumes it, and finished trials
(and their minutes) count toward the budget. The result, with the trial table, goes to
`<output_dir>/hpo.json`. Optuna and torch are imported inside the functions, as in `train`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from raftloop_trainer.train import LoraParams, TrainConfig

log = logging.getLogger("raftloop_trainer.hpo")

HPO_FILE = "hpo.json"
HPO_STORAGE = "hpo.sqlite3"
STUDY_NAME = "lora-sft"
DEFAULTS_ATTR = "defaults"
SEARCHED = ("learning_rate", "rank", "alpha_ratio", "epochs")


class HpoParams(BaseModel):
    """The budget, the validation split and the search space of the LoRA search."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trials: int = Field(
        default=0,
        ge=0,
        description="Trials to run, the defaults included; 0 turns the search off. Off by "
        "default: on CPU one training of the demo loop already takes minutes, and every trial "
        "is one more.",
    )
    minutes: float = Field(default=10.0, gt=0, description="Wall budget of the whole search.")
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    min_validation: int = Field(
        default=4, ge=1, description="Fewer training examples than twice this skip the search."
    )
    learning_rate: tuple[float, float] = Field(
        default=(2e-4, 5e-3), description="Log-uniform range."
    )
    rank: tuple[int, ...] = Field(default=(8, 16, 32), description="Choices.")
    alpha_ratio: tuple[float, ...] = Field(
        default=(1.0, 2.0), description="Choices; alpha = rank * ratio."
    )
    epochs: tuple[int, int] = Field(default=(1, 3), description="Integer range.")
    dpo_beta: tuple[float, float] = Field(
        default=(0.05, 0.5),
        description="Reported, not searched yet: DPO's loss scales with beta, so validation "
        "losses of different betas are not comparable; see `search_dpo_beta`.",
    )
    search_dpo_beta: bool = Field(
        default=False, description="Refused when true until beta has a comparable objective."
    )
    seed: int = 42

    @model_validator(mode="after")
    def _check_space(self) -> HpoParams:
        problems = space_problems(self)
        if problems:
            raise ValueError("invalid TRAINER_HPO search space: " + "; ".join(problems))
        if self.search_dpo_beta:
            raise ValueError(
                "searching dpo_beta is not supported yet: DPO's validation loss scales with "
                "beta, so it cannot rank trials; set search_dpo_beta to false and set "
                "TRAINER_DPO's beta by hand"
            )
        return self


def space_problems(hpo: HpoParams) -> list[str]:
    """What is wrong with the search space (empty when nothing is)."""
    problems = []
    for name in ("learning_rate", "epochs", "dpo_beta"):
        low, high = getattr(hpo, name)
        if low <= 0 or high < low:
            problems.append(f"{name} must be a range 0 < low <= high, got ({low}, {high})")
    if not hpo.rank or min(hpo.rank) < 1:
        problems.append(f"rank must be one or more choices >= 1, got {hpo.rank}")
    if not hpo.alpha_ratio or min(hpo.alpha_ratio) <= 0:
        problems.append(f"alpha_ratio must be one or more choices > 0, got {hpo.alpha_ratio}")
    return problems


@dataclass(frozen=True)
class Split:
    """Indices into the training examples: what trials train on and what judges them."""

    train: list[int]
    validation: list[int]


def too_few_reason(examples: int, hpo: HpoParams) -> str | None:
    """Why `examples` training examples are too few to carve a validation split, or None."""
    if examples < 2 * hpo.min_validation:
        return (
            f"{examples} training examples, fewer than the {2 * hpo.min_validation} a validation "
            f"split of at least {hpo.min_validation} needs (min_validation in TRAINER_HPO)"
        )
    return None


def carve_validation(keys: Sequence[str], hpo: HpoParams) -> Split:
    """The validation split: the examples whose seeded hash of their id is smallest.

    Hashing ids (not positions) keeps an example on the same side when the file is rebuilt in
    another order, and the size is exact: `validation_fraction` of the examples, at least
    `min_validation`, never more than half.
    """
    size = max(hpo.min_validation, round(hpo.validation_fraction * len(keys)))
    size = min(size, len(keys) // 2)
    order = sorted(range(len(keys)), key=lambda i: _digest(hpo.seed, keys[i], i))
    validation = sorted(order[:size])
    chosen = set(validation)
    return Split([i for i in range(len(keys)) if i not in chosen], validation)


def _digest(seed: int, key: str, index: int) -> tuple[str, int]:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest(), index


def load_rows(path: Path) -> list[tuple[str, list[dict[str, str]]]]:
    """Each example's key (its `example_id`, else `#<line>`) and messages."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = [json.loads(line) for line in lines]
    return [(str(r.get("example_id") or f"#{i}"), r["messages"]) for i, r in enumerate(rows)]


@dataclass(frozen=True)
class TrialRow:
    """One line of the trial table."""

    number: int
    state: str
    params: dict[str, float | int]
    value: float | None
    seconds: float | None
    defaults: bool
    epochs_done: int = 0


@dataclass(frozen=True)
class HpoResult:
    """What the search found, written to `hpo.json` for the report."""

    state: str
    default_value: float | None = None
    best_value: float | None = None
    best_params: dict[str, float | int] = field(default_factory=dict)
    chosen: dict[str, Any] = field(default_factory=dict)
    beats_defaults: bool = False
    trials: list[TrialRow] = field(default_factory=list)
    train_examples: int = 0
    validation_examples: int = 0
    skipped_reason: str | None = None
    not_searched: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON form of `hpo.json`."""
        return asdict(self)


def read_result(output_dir: Path) -> dict[str, Any] | None:
    """The `hpo.json` of a job folder, or None."""
    try:
        data: dict[str, Any] = json.loads((output_dir / HPO_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data


def not_searched(config: TrainConfig) -> list[str]:
    """The parameters the search leaves as they are, and why, for the report."""
    kept = [
        "dropout, target_modules, top_layers, max_length, batch_size: kept from TRAINER_LORA",
    ]
    if config.recipe != "sft":
        kept.append(f"dpo beta: kept at {config.dpo.beta} (no comparable objective yet)")
    return kept


def search(config: TrainConfig, hpo: HpoParams) -> HpoResult:
    """Run (or resume) the study on a validation split of the training examples.

    Writes `<output_dir>/hpo.json` and returns the result; a split too small skips the search
    and says why.
    """
    from raftloop_trainer.hpo_trial import open_study, run_study
    from raftloop_trainer.progress import write_json_atomic

    rows = load_rows(config.examples_path)
    reason = too_few_reason(len(rows), hpo)
    if reason:
        log.warning("hyper-parameter search skipped", extra={"reason": reason})
        result = HpoResult(
            state="skipped", skipped_reason=reason, not_searched=not_searched(config)
        )
    else:
        split = carve_validation([key for key, _ in rows], hpo)
        study = open_study(config, hpo)
        started = time.monotonic()
        run_study(study, config, hpo, [messages for _, messages in rows], split)
        result = summarize(study, config, split)
        log.info(
            "hyper-parameter search finished",
            extra={
                "seconds": round(time.monotonic() - started, 1),
                "default_value": result.default_value,
                "best_value": result.best_value,
                "beats_defaults": result.beats_defaults,
            },
        )
    write_json_atomic(config.output_dir / HPO_FILE, result.to_json())
    return result


def summarize(study: Any, config: TrainConfig, split: Split) -> HpoResult:
    """The result of a study: the table, the defaults' value, the best and the chosen params."""
    table = [trial_row(t) for t in study.trials]
    default_value = next((r.value for r in table if r.defaults and r.state == "COMPLETE"), None)
    done = [r for r in table if r.state == "COMPLETE" and r.value is not None]
    best = min(done, key=lambda r: float(r.value or 0.0)) if done else None
    beats = (
        best is not None
        and not best.defaults
        and default_value is not None
        and float(best.value or 0.0) < default_value
    )
    chosen = chosen_params(config.params, best.params) if best and beats else config.params
    return HpoResult(
        state="done",
        default_value=default_value,
        best_value=best.value if best else None,
        best_params=best.params if best else {},
        chosen=chosen.model_dump(mode="json"),
        beats_defaults=beats,
        trials=table,
        train_examples=len(split.train),
        validation_examples=len(split.validation),
        not_searched=not_searched(config),
    )


def trial_row(trial: Any) -> TrialRow:
    """A table line of an Optuna `FrozenTrial` (a pruned trial keeps its last epoch's value)."""
    value = trial.value
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    duration = trial.duration.total_seconds() if trial.duration else None
    return TrialRow(
        number=int(trial.number),
        state=str(trial.state.name),
        params=dict(trial.params),
        value=None if value is None else float(value),
        seconds=None if duration is None else round(duration, 2),
        defaults=bool(trial.user_attrs.get(DEFAULTS_ATTR, False)),
        epochs_done=len(trial.intermediate_values),
    )


def chosen_params(defaults: LoraParams, best: dict[str, float | int]) -> LoraParams:
    """The defaults with a trial's values; epochs (not max_steps) set the length, as in trials."""
    rank = int(best["rank"])
    return defaults.model_copy(
        update={
            "learning_rate": float(best["learning_rate"]),
            "rank": rank,
            "alpha": max(1, round(rank * float(best["alpha_ratio"]))),
            "epochs": float(best["epochs"]),
            "max_steps": -1,
        }
    )
