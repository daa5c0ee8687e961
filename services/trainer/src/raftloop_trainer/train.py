"""LoRA fine-tuning of a causal LM on RAFT examples: a plain function and a CLI.

`python -m raftloop_trainer.train --config <run>/train_config.json` runs in its own process so the
service's consumer stays live. It resumes from the last checkpoint in `<output_dir>/checkpoints`
when one exists (a killed run starts where it stopped), writes progress (step, loss, eta) to the
log and to `<output_dir>/progress.json`, and saves the adapter to `<output_dir>/adapter`.

The recipe (`TrainConfig.recipe`) adds a preference stage (`raftloop_trainer.dpo`): `sft+dpo`
trains SFT into `<output_dir>/sft-adapter`, then DPO on the pairs from there; `dpo` trains DPO
from the base model. Each stage resumes on its own, and `<output_dir>/stages.json` says what
each stage did (a DPO stage with fewer than `min_pairs` pairs is skipped, and says why).

With `TrainConfig.hpo` asking for trials, a hyper-parameter search (`raftloop_trainer.hpo`) runs
first and, when it beats the defaults, leaves a second adapter in `<output_dir>/hpo-adapter`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from raftloop_trainer.encoding import encode_example, pad_batch
from raftloop_trainer.hpo import HpoParams
from raftloop_trainer.preference import Recipe

log = logging.getLogger("raftloop_trainer.train")

ADAPTER_DIR = "adapter"
SFT_ADAPTER_DIR = "sft-adapter"
CHECKPOINT_DIR = "checkpoints"
PROGRESS_FILE = "progress.json"
STAGES_FILE = "stages.json"
HPO_ADAPTER_DIR = "hpo-adapter"
HPO_RUN_DIR = "hpo-run"


class LoraParams(BaseModel):
    """The LoRA and optimisation hyper-parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rank: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    top_layers: int | None = Field(
        default=None,
        ge=1,
        description="LoRA on the top N layers only: backward stops there, which halves CPU time.",
    )
    learning_rate: float = Field(default=1e-3, gt=0)
    epochs: float = Field(default=3.0, gt=0)
    max_steps: int = Field(default=-1, description="Overrides epochs when positive.")
    batch_size: int = Field(default=4, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    warmup_steps: int = Field(default=2, ge=0)
    max_length: int = Field(default=512, ge=64)
    seed: int = 42
    save_steps: int = Field(default=10, ge=1)


class DpoParams(BaseModel):
    """The preference (DPO) stage's own hyper-parameters; LoRA shape and length come from LoRA."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    beta: float = Field(default=0.1, gt=0, description="How far DPO may move from the reference.")
    sft_weight: float = Field(
        default=1.0,
        ge=0,
        description="Weight of an NLL term on the chosen answers beside the DPO loss (TRL's "
        "loss_type ['sigmoid', 'sft'], as RPO does): it keeps the chosen answers likely while "
        "the rejected ones are pushed down; 0 is plain sigmoid DPO.",
    )
    learning_rate: float = Field(default=2e-4, gt=0)
    epochs: float = Field(default=2.0, gt=0)
    max_steps: int = Field(default=-1, description="Overrides epochs when positive.")
    batch_size: int = Field(default=2, ge=1, description="Pairs per step (two sequences each).")
    grad_accum: int = Field(default=1, ge=1)
    warmup_steps: int = Field(default=0, ge=0)
    save_steps: int = Field(default=10, ge=1)


class TrainConfig(BaseModel):
    """Everything one training job needs; written as JSON next to its outputs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_model_dir: Path
    examples_path: Path = Field(description="JSONL of RAFT examples: {'messages': [...]}.")
    output_dir: Path
    params: LoraParams = Field(default_factory=LoraParams)
    device: str = Field(default="auto", description="auto, cpu or cuda.")
    recipe: Recipe = "sft"
    pairs_path: Path | None = Field(
        default=None, description="JSONL of preference pairs (`preference.write_pairs`)."
    )
    dpo: DpoParams = Field(default_factory=DpoParams)
    min_pairs: int = Field(default=1, ge=1, description="Fewer pairs skip the DPO stage.")
    hpo: HpoParams | None = Field(
        default=None, description="A hyper-parameter search before the recipe (`hpo`)."
    )


def load_examples(path: Path) -> list[list[dict[str, str]]]:
    """The message lists of a RAFT examples file."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row["messages"] for row in rows]


def resolve_device(name: str) -> str:
    """`auto` means CUDA when present, else CPU."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_model(base_model_dir: Path, device: str) -> tuple[Any, Any]:
    """The tokenizer and base model (bf16 on CUDA when supported, fp32 on CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    model: Any = AutoModelForCausalLM.from_pretrained(
        base_model_dir, dtype=torch.bfloat16 if bf16 else torch.float32
    )
    return tokenizer, model.to(device)


def lora_config(model: Any, params: LoraParams) -> Any:
    """The peft `LoraConfig` of `params` for `model` (its top layers only, when asked)."""
    from peft import LoraConfig, TaskType

    layers = None
    if params.top_layers is not None:
        total = int(model.config.num_hidden_layers)
        layers = list(range(max(total - params.top_layers, 0), total))
    return LoraConfig(
        layers_to_transform=layers,
        r=params.rank,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=list(params.target_modules),
        task_type=TaskType.CAUSAL_LM,
    )


def lora_model(model: Any, params: LoraParams) -> Any:
    """Wrap `model` with fresh LoRA layers."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, params))


def encoded_dataset(tokenizer: Any, config: TrainConfig) -> list[dict[str, list[int]]]:
    """Every example of the config encoded with labels on the answer only."""
    examples = load_examples(config.examples_path)
    if not examples:
        raise ValueError(f"{config.examples_path} holds no examples; nothing to train on")
    limit = config.params.max_length
    encoded = [encode_example(tokenizer, m, max_length=limit) for m in examples]
    # A cut example fills max_length exactly; its documents lost their middle, often the oracle,
    # and the model learns to quote text it cannot see.
    cut = sum(len(e["input_ids"]) == limit for e in encoded)
    if cut:
        log.warning(
            "%d of %d examples are longer than max_length %d and lose the middle of their "
            "documents; raise max_length (TRAINER_LORA) or retrieve shorter chunks",
            cut,
            len(encoded),
            limit,
        )
    return encoded


def schedule_arguments(
    p: LoraParams | DpoParams, output_dir: Path, seed: int, device: str
) -> dict[str, Any]:
    """What every stage's Trainer arguments share.

    The step schedule, checkpoints every `save_steps` (two kept, for resume), the seed, the
    device and the quiet defaults.
    """
    import torch

    return {
        "output_dir": str(output_dir),
        "num_train_epochs": p.epochs,
        "max_steps": p.max_steps,
        "per_device_train_batch_size": p.batch_size,
        "gradient_accumulation_steps": p.grad_accum,
        "learning_rate": p.learning_rate,
        "warmup_steps": p.warmup_steps,
        "lr_scheduler_type": "linear",
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": p.save_steps,
        "save_total_limit": 2,
        "seed": seed,
        "data_seed": seed,
        "report_to": [],
        "use_cpu": device == "cpu",
        "bf16": device == "cuda" and torch.cuda.is_bf16_supported(),
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }


def training_arguments(config: TrainConfig, device: str) -> Any:
    """The TrainingArguments for this config."""
    from transformers import TrainingArguments

    p = config.params
    return TrainingArguments(
        **schedule_arguments(p, config.output_dir / CHECKPOINT_DIR, p.seed, device),
        remove_unused_columns=False,
    )


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint whose trainer state was fully written; half-written ones go.

    The Trainer writes `trainer_state.json` last, so a run killed mid-save leaves a folder
    without a readable one: resuming from it would fail, so it is removed.
    """
    if not folder.is_dir():
        return None
    found = sorted(
        (p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for path in found:
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            log.warning("removing incomplete checkpoint", extra={"checkpoint": str(path)})
            shutil.rmtree(path, ignore_errors=True)
            continue
        return str(path)
    return None


def train(config: TrainConfig) -> Path:
    """Train a LoRA adapter with the config's recipe; return the adapter folder.

    With `config.hpo` asking for trials, the search and its tuned adapter come first: the
    runner takes an `adapter` folder to mean the whole job is done, so it must appear last for
    a killed search to resume.
    """
    if config.hpo is not None and config.hpo.trials > 0:
        train_tuned(config, config.hpo)
    if config.recipe == "sft":
        return train_sft(config, config.output_dir / ADAPTER_DIR)
    from raftloop_trainer.dpo import run_preference_recipe

    return run_preference_recipe(config)


def train_tuned(config: TrainConfig, hpo: HpoParams) -> Path | None:
    """Search, then train SFT with the chosen values on all training examples.

    The tuned adapter goes to `<output_dir>/hpo-adapter` (None when the defaults stay best, or
    the search was skipped). It trains from its own `hpo-run` folder (checkpoints, progress), so
    it resumes apart from the recipe's stages; a finished `hpo.json` is not searched again.
    """
    from raftloop_trainer.hpo import read_result, search

    result = read_result(config.output_dir)
    if result is None or result.get("state") not in ("done", "skipped"):
        result = search(config, hpo).to_json()
    if not result.get("beats_defaults"):
        log.info("no tuned adapter", extra={"reason": "the defaults were not beaten"})
        return None
    target = config.output_dir / HPO_ADAPTER_DIR
    if (target / "adapter_model.safetensors").is_file():
        return target
    run = config.model_copy(
        update={
            "params": LoraParams.model_validate(result["chosen"]),
            "output_dir": config.output_dir / HPO_RUN_DIR,
            "hpo": None,
        }
    )
    # Saved aside and moved in whole: an `hpo-adapter` folder is always a complete adapter.
    partial = target.with_name(f".{HPO_ADAPTER_DIR}")
    shutil.rmtree(partial, ignore_errors=True)
    train_sft(run, partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def train_sft(config: TrainConfig, target: Path) -> Path:
    """The SFT stage: resume from the last checkpoint; save the adapter to `target`."""
    from transformers import Trainer, set_seed

    from raftloop_trainer.progress import ProgressCallback, read_progress, write_json_atomic

    device = resolve_device(config.device)
    set_seed(config.params.seed)
    tokenizer, model = load_model(config.base_model_dir, device)
    model = lora_model(model, config.params)
    data = encoded_dataset(tokenizer, config)
    args = training_arguments(config, device)
    last = last_complete_checkpoint(Path(args.output_dir))
    pad_id = tokenizer.pad_token_id
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=lambda batch: pad_batch(batch, pad_id),
        callbacks=[ProgressCallback(config.output_dir / PROGRESS_FILE, resumed_from=last)],
    )
    log.info(
        "training started",
        extra={"examples": len(data), "device": device, "resume_from": last or ""},
    )
    output = trainer.train(resume_from_checkpoint=last)
    model.save_pretrained(target, safe_serialization=True)
    progress_path = config.output_dir / PROGRESS_FILE
    progress = read_progress(progress_path) or {}
    progress |= {
        "state": "done",
        "train_runtime_s": float(output.metrics.get("train_runtime", 0.0)),
        "train_loss": float(output.training_loss),
        "examples": len(data),
        "tokens_per_epoch": sum(len(d["input_ids"]) for d in data),
    }
    write_json_atomic(progress_path, progress)
    return target


def main(argv: list[str] | None = None) -> None:
    """CLI entry: `python -m raftloop_trainer.train --config train_config.json`."""
    parser = argparse.ArgumentParser(description="Train a RAFT LoRA adapter.")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    from raftloop_core.logs import configure_logging

    configure_logging("trainer-job", level=os.environ.get("RAFTLOOP_LOG_LEVEL", "INFO"))
    config = TrainConfig.model_validate_json(args.config.read_text())
    started = time.monotonic()
    adapter = train(config)
    log.info(
        "training finished",
        extra={"adapter": str(adapter), "seconds": round(time.monotonic() - started, 1)},
    )


if __name__ == "__main__":
    main()
