"""The preference stage of a recipe: DPO with LoRA on reviewers' pairs, through TRL.

TRL's `DPOTrainer` computes the loss (sigmoid DPO, `beta` from `DpoParams`); this module only
prepares the pairs, configures it, and saves the adapter. `sft+dpo` continues from the SFT
stage's adapter, whose frozen copy is the reference; `dpo` trains fresh LoRA layers on the base
model, which (adapters disabled) is the reference. Like the SFT stage, it resumes from the last
complete checkpoint in `<output_dir>/dpo-checkpoints` and logs each step with `stage: dpo`.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from raftloop_trainer.encoding import KEEP_HEAD_TOKENS, render_prompt
from raftloop_trainer.preference import PreferencePair, load_pairs
from raftloop_trainer.progress import write_json_atomic
from raftloop_trainer.train import (
    ADAPTER_DIR,
    PROGRESS_FILE,
    SFT_ADAPTER_DIR,
    STAGES_FILE,
    TrainConfig,
    last_complete_checkpoint,
    load_model,
    lora_config,
    resolve_device,
    schedule_arguments,
    train_sft,
)

log = logging.getLogger("raftloop_trainer.train")

DPO_CHECKPOINT_DIR = "dpo-checkpoints"


def pair_texts(
    tokenizer: Any, pair: PreferencePair, max_length: int
) -> tuple[dict[str, str], bool]:
    """TRL's standard preference row of a pair, and whether its prompt had to be cut.

    The prompt is the chat template up to the assistant's turn, each completion the rest of the
    templated chat (answer and end-of-turn token). A prompt too long for `max_length` next to the
    longer completion loses its middle (the documents), never its head or the question, as in
    `encoding.encode_example`.

    Raises:
        ValueError: the template does not render the prompt as a prefix, or no room is left.
    """
    prompt = render_prompt(tokenizer, pair.prompt)
    row = {"prompt": prompt}
    for side, text in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        chat = [*pair.prompt, {"role": "assistant", "content": text}]
        full = str(tokenizer.apply_chat_template(chat, tokenize=False))
        if not full.startswith(prompt):
            raise ValueError("the chat template does not render the prompt as a prefix of the chat")
        row[side] = full[len(prompt) :].rstrip("\n")
    sides = (row["chosen"], row["rejected"])
    longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in sides)
    budget = max_length - longest - 1  # TRL appends EOS when a completion lacks it
    if budget < KEEP_HEAD_TOKENS * 2:
        raise ValueError(
            f"max_length {max_length} leaves no room for the prompt of a {longest}-token "
            "completion; raise max_length"
        )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(prompt_ids) <= budget:
        return row, False
    tail = budget - KEEP_HEAD_TOKENS
    row["prompt"] = tokenizer.decode(prompt_ids[:KEEP_HEAD_TOKENS] + prompt_ids[-tail:])
    return row, True


def dpo_arguments(config: TrainConfig, device: str) -> Any:
    """TRL's `DPOConfig` for the stage; prompts are already cut to `max_length` by `pair_texts`."""
    from trl.trainer.dpo_config import DPOConfig

    return DPOConfig(
        **schedule_arguments(
            config.dpo, config.output_dir / DPO_CHECKPOINT_DIR, config.params.seed, device
        ),
        beta=config.dpo.beta,
        **_loss(config.dpo.sft_weight),
        # TRL turns this on by default; the SFT stage does not use it (small models).
        activation_checkpointing=False,
        max_length=None,
    )


def _loss(sft_weight: float) -> dict[str, Any]:
    """TRL's loss settings: sigmoid DPO, plus NLL on the chosen answers when weighted."""
    if sft_weight == 0:
        return {}
    return {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, sft_weight]}


def train_dpo(
    config: TrainConfig, pairs: list[PreferencePair], start: Path | None, target: Path
) -> dict[str, Any]:
    """Train DPO on `pairs` from the adapter at `start` (None: fresh LoRA on the base model).

    Saves the adapter to `target` and returns the stage's summary.
    """
    from datasets import Dataset
    from peft import PeftModel
    from transformers import set_seed
    from trl.trainer.dpo_trainer import DPOTrainer

    from raftloop_trainer.progress import ProgressCallback

    device = resolve_device(config.device)
    set_seed(config.params.seed)
    tokenizer, model = load_model(config.base_model_dir, device)
    rows, cut = pair_rows(tokenizer, pairs, config.params.max_length)
    peft_config = None
    if start is None:
        peft_config = lora_config(model, config.params)
    else:
        model = PeftModel.from_pretrained(model, str(start), is_trainable=True)
    args = dpo_arguments(config, device)
    last = last_complete_checkpoint(Path(args.output_dir))
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[
            ProgressCallback(config.output_dir / PROGRESS_FILE, resumed_from=last, stage="dpo")
        ],
    )
    log.info(
        "dpo stage started",
        extra={"pairs": len(pairs), "from": str(start or "base"), "resume_from": last or ""},
    )
    output = trainer.train(resume_from_checkpoint=last)
    _save_adapter(trainer.model, target)
    margins = [e["rewards/margins"] for e in trainer.state.log_history if "rewards/margins" in e]
    return {
        "state": "done",
        "pairs": len(pairs),
        "from": "sft" if start is not None else "base",
        "beta": config.dpo.beta,
        "steps": int(trainer.state.global_step),
        "train_loss": float(output.training_loss),
        "train_runtime_s": float(output.metrics.get("train_runtime", 0.0)),
        "last_reward_margin": float(margins[-1]) if margins else None,
        "prompts_cut": cut,
        "resumed_from": last,
    }


def pair_rows(
    tokenizer: Any, pairs: list[PreferencePair], max_length: int
) -> tuple[list[dict[str, str]], int]:
    """TRL's rows of `pairs` and how many prompts were cut (logged, as the SFT stage does)."""
    built = [pair_texts(tokenizer, p, max_length) for p in pairs]
    cut = sum(was_cut for _, was_cut in built)
    if cut:
        log.warning(
            "%d of %d preference prompts are longer than max_length %d and lose the middle of "
            "their documents; raise max_length (TRAINER_LORA)",
            cut,
            len(built),
            max_length,
        )
    return [row for row, _ in built], cut


def _save_adapter(model: Any, target: Path) -> None:
    """Save the trained adapter only, not TRL's frozen reference copy of it (`ref`)."""
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target, safe_serialization=True, selected_adapters=["default"])


def _replace_dir(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    os.replace(source, target)


def _adapter_saved(folder: Path) -> bool:
    return (folder / "adapter_model.safetensors").is_file() and (
        folder / "adapter_config.json"
    ).is_file()


def run_preference_recipe(config: TrainConfig) -> Path:
    """`sft+dpo` or `dpo`: the stages in order; return the final adapter folder.

    The final adapter appears only when every stage is done (the runner reuses a job folder
    that has one). A DPO stage with fewer than `min_pairs` pairs is skipped with a warning:
    `sft+dpo` then keeps the SFT adapter, and `dpo`, with nothing to train, fails.

    Raises:
        ValueError: recipe `dpo` without enough pairs.
    """
    stages: dict[str, Any] = {"recipe": config.recipe}
    start: Path | None = None
    if config.recipe == "sft+dpo":
        start = config.output_dir / SFT_ADAPTER_DIR
        if not _adapter_saved(start):
            train_sft(config, start)
        stages["sft"] = {"state": "done"}
    pairs = load_pairs(config.pairs_path) if config.pairs_path else []
    target = config.output_dir / ADAPTER_DIR
    if len(pairs) >= config.min_pairs:
        stages["dpo"] = train_dpo(config, pairs, start, target.with_name(".dpo-adapter"))
        write_json_atomic(config.output_dir / STAGES_FILE, stages)
        _replace_dir(target.with_name(".dpo-adapter"), target)
        return target
    reason = (
        f"{len(pairs)} preference pairs, fewer than the {config.min_pairs} the DPO stage needs "
        "(TRAINER_MIN_PAIRS)"
    )
    stages["dpo"] = {"state": "skipped", "reason": reason, "pairs": len(pairs)}
    if start is None:
        raise ValueError(f"recipe dpo has nothing to train: {reason}")
    log.warning("dpo stage skipped", extra={"reason": reason, "recipe": config.recipe})
    write_json_atomic(config.output_dir / STAGES_FILE, stages)
    tmp = target.with_name(".sft-copy")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(start, tmp)
    _replace_dir(tmp, target)
    return target
