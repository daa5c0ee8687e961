"""The Optuna side of the search: the study, its budget, and one trial's train-then-validate.

A trial trains fresh LoRA layers with transformers' `Trainer` on the training part of the split
(no checkpoints: a killed trial is redone, the study resumes at trial level) and, after every
epoch, measures the mean answer-token NLL on the validation part. `MedianPruner` stops a trial
whose epoch is worse than the median of earlier trials at the same epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

from raftloop_trainer.encoding import IGNORE_INDEX, encode_example, pad_batch
from raftloop_trainer.hpo import DEFAULTS_ATTR, HPO_STORAGE, STUDY_NAME, HpoParams, Split
from raftloop_trainer.progress import write_json_atomic
from raftloop_trainer.train import (
    PROGRESS_FILE,
    LoraParams,
    TrainConfig,
    load_model,
    lora_model,
    resolve_device,
    schedule_arguments,
)

log = logging.getLogger("raftloop_trainer.hpo")

TRIALS_DIR = "hpo-trials"
PRUNER_STARTUP_TRIALS = 2  # the defaults and one more: the median needs something to compare


def open_study(config: TrainConfig, hpo: HpoParams) -> Any:
    """The job's study in `<output_dir>/hpo.sqlite3`, created or resumed.

    A new study gets the defaults as its first trial. Trials a killed job left running are
    marked failed, and the defaults are queued again when theirs was one of them.
    """
    import optuna

    # Optuna's own stderr handler would bypass the job's JSON logs.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    config.output_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=f"sqlite:///{(config.output_dir / HPO_STORAGE).resolve()}",
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=hpo.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS),
    )
    stale = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    for trial in stale:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    if not study.trials or any(t.user_attrs.get(DEFAULTS_ATTR) for t in stale):
        study.enqueue_trial(default_trial(config.params), user_attrs={DEFAULTS_ATTR: True})
    return study


def default_trial(p: LoraParams) -> dict[str, float | int]:
    """The defaults as trial params (epochs rounded: trials count whole epochs)."""
    return {
        "learning_rate": p.learning_rate,
        "rank": p.rank,
        "alpha_ratio": p.alpha / p.rank,
        "epochs": max(1, round(p.epochs)),
    }


def run_study(
    study: Any,
    config: TrainConfig,
    hpo: HpoParams,
    examples: Sequence[list[dict[str, str]]],
    split: Split,
) -> None:
    """Run what is left of the budget: trials and minutes already spent count toward it."""
    import optuna

    finished = [t for t in study.trials if t.state.is_finished()]
    spent = sum(t.duration.total_seconds() for t in finished if t.duration)
    counted = [t for t in finished if t.state != optuna.trial.TrialState.FAIL]
    trials_left = hpo.trials - len(counted)
    seconds_left = hpo.minutes * 60 - spent
    if trials_left <= 0 or seconds_left <= 0:
        log.info("hyper-parameter budget already spent", extra={"trials": len(counted)})
        return
    device = resolve_device(config.device)
    tokenizer, _ = load_model(config.base_model_dir, "cpu")
    limit = config.params.max_length
    encoded = [encode_example(tokenizer, m, max_length=limit) for m in examples]
    setup = TrialSetup(
        config=config,
        hpo=hpo,
        device=device,
        pad_id=int(tokenizer.pad_token_id),
        train=[encoded[i] for i in split.train],
        validation=[encoded[i] for i in split.validation],
    )
    study.optimize(setup.objective, n_trials=trials_left, timeout=seconds_left)


@dataclass(frozen=True)
class TrialSetup:
    """What every trial shares: the job, the space and the encoded split."""

    config: TrainConfig
    hpo: HpoParams
    device: str
    pad_id: int
    train: list[dict[str, list[int]]]
    validation: list[dict[str, list[int]]]

    def objective(self, trial: Any) -> float:
        """Train the trial's params, report each epoch's validation loss; the last one counts."""
        import optuna

        params = self.suggest(trial)
        # The service shows progress.json; during the search it says which trial is running.
        write_json_atomic(
            self.config.output_dir / PROGRESS_FILE,
            {"state": "searching", "trial": trial.number, "trials": self.hpo.trials},
        )

        def report(value: float, epoch: int) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: validation loss {value:.4f}")

        value = fit_and_validate(self, params, report)
        log.info("hpo trial done", extra={"trial": trial.number, "value": round(value, 5)})
        return value

    def suggest(self, trial: Any) -> LoraParams:
        """The trial's LoRA params: the searched ones from Optuna, the rest from the config."""
        hpo, defaults = self.hpo, self.config.params
        # Categorical choices must hold the defaults, or Optuna cannot replay the first trial.
        ratio = defaults.alpha / defaults.rank
        rank = trial.suggest_categorical("rank", sorted({*hpo.rank, defaults.rank}))
        alpha_ratio = trial.suggest_categorical("alpha_ratio", sorted({*hpo.alpha_ratio, ratio}))
        return defaults.model_copy(
            update={
                "learning_rate": trial.suggest_float("learning_rate", *hpo.learning_rate, log=True),
                "rank": rank,
                "alpha": max(1, round(rank * alpha_ratio)),
                "epochs": float(trial.suggest_int("epochs", *hpo.epochs)),
                "max_steps": -1,
            }
        )


def fit_and_validate(
    setup: TrialSetup, params: LoraParams, report: Callable[[float, int], None]
) -> float:
    """Train fresh LoRA with `params` on the train part; the last epoch's validation loss."""
    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(params.seed)
    _, base = load_model(setup.config.base_model_dir, setup.device)
    model = lora_model(base, params)
    folder = setup.config.output_dir / TRIALS_DIR
    args = TrainingArguments(
        **schedule_arguments(params, folder, params.seed, setup.device)
        | {"save_strategy": "no", "logging_steps": 50},
        remove_unused_columns=False,
    )
    check = EpochValidation(setup.validation, setup.pad_id, params.batch_size, report)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=setup.train,
        data_collator=lambda batch: pad_batch(batch, setup.pad_id),
        callbacks=[check],
    )
    trainer.train()
    if check.last is None:
        raise RuntimeError("the trial finished without an epoch; check epochs in TRAINER_HPO")
    return check.last


class EpochValidation(TrainerCallback):
    """After each epoch: the validation loss, handed to `report` (which may prune)."""

    def __init__(
        self,
        data: list[dict[str, list[int]]],
        pad_id: int,
        batch_size: int,
        report: Callable[[float, int], None],
    ) -> None:
        self.data = data
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.report = report
        self.last: float | None = None
        self.epoch = 0

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:  # noqa: ARG002
        """Measure, remember and report this epoch's validation loss."""
        self.epoch += 1
        self.last = validation_loss(kwargs["model"], self.data, self.pad_id, self.batch_size)
        self.report(self.last, self.epoch)


def validation_loss(
    model: Any, data: Sequence[dict[str, list[int]]], pad_id: int, batch_size: int
) -> float:
    """Mean NLL per answer token (labels only on the answer, as in training), without grad."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = {
                k: v.to(device)
                for k, v in pad_batch(data[start : start + batch_size], pad_id).items()
            }
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            labels = batch["labels"][:, 1:]
            logits = logits[:, :-1].float()
            total += float(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    labels.reshape(-1),
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
            )
            count += int((labels != IGNORE_INDEX).sum())
    model.train()
    return total / count if count else math.inf
