"""Evaluation: generate answers with the base model or an adapter, score them, compare pairs.

`python -m raftloop_trainer.evaluate --config <run>/eval_config.json` runs in its own process
(like training) and writes `<output_dir>/scores.json` with every variant's answers and scores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from raftloop_trainer.encoding import render_prompt
from raftloop_trainer.metrics import METRICS, PairedDiff, paired_bootstrap, score_all
from raftloop_trainer.raft import RaftExample, final_answer

log = logging.getLogger("raftloop_trainer.evaluate")

EvalSet = Literal["holdout", "regression"]
SCORES_FILE = "scores.json"
REGRESSION_SYSTEM = "You are a helpful assistant. Answer briefly."


class EvalItem(BaseModel):
    """One question to answer: the prompt messages and the reference answer."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    set: EvalSet
    messages: list[dict[str, str]]
    reference: str


class Variant(BaseModel):
    """A model to evaluate: the base model alone or with an adapter."""

    model_config = ConfigDict(frozen=True)

    name: str
    adapter_dir: Path | None = None


class EvalConfig(BaseModel):
    """One evaluation job."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_model_dir: Path
    items: list[EvalItem]
    variants: list[Variant]
    output_dir: Path
    max_new_tokens: int = Field(default=64, ge=1)
    batch_size: int = Field(default=8, ge=1)
    device: str = "auto"


def holdout_items(examples: Sequence[RaftExample]) -> list[EvalItem]:
    """Hold-out items in the RAFT prompt format; the reference is the example's final answer."""
    return [
        EvalItem(
            item_id=e.example_id,
            set="holdout",
            messages=e.prompt,
            reference=final_answer(e.target),
        )
        for e in examples
    ]


def regression_items(questions: Sequence[tuple[str, str, str]]) -> list[EvalItem]:
    """General questions (id, question, answer) asked without documents: the forgetting check."""
    return [
        EvalItem(
            item_id=qid,
            set="regression",
            messages=[
                {"role": "system", "content": REGRESSION_SYSTEM},
                {"role": "user", "content": question},
            ],
            reference=answer,
        )
        for qid, question, answer in questions
    ]


def generate(
    model: Any, tokenizer: Any, items: Sequence[EvalItem], config: EvalConfig
) -> list[str]:
    """Greedy answers for every item, in batches with left padding."""
    import torch

    tokenizer.padding_side = "left"
    outputs: list[str] = []
    for start in range(0, len(items), config.batch_size):
        batch = items[start : start + config.batch_size]
        prompts = [render_prompt(tokenizer, item.messages) for item in batch]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        with torch.inference_mode():
            out = model.generate(
                **enc,
                max_new_tokens=config.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    return outputs


def score_outputs(items: Sequence[EvalItem], outputs: Sequence[str]) -> list[dict[str, float]]:
    """Metric scores of each output's final answer against its reference."""
    return [score_all(final_answer(o), i.reference) for i, o in zip(items, outputs, strict=True)]


def run_variant(config: EvalConfig, variant: Variant) -> dict[str, Any]:
    """Answers and scores of one variant."""
    from raftloop_trainer.train import load_model, resolve_device

    device = resolve_device(config.device)
    tokenizer, model = load_model(config.base_model_dir, device)
    if variant.adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(variant.adapter_dir))
    model.eval()
    started = time.monotonic()
    outputs = generate(model, tokenizer, config.items, config)
    log.info(
        "variant evaluated",
        extra={"variant": variant.name, "seconds": round(time.monotonic() - started, 1)},
    )
    return {"outputs": outputs, "scores": score_outputs(config.items, outputs)}


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Run every variant and write `scores.json`."""
    result = {
        "items": [i.model_dump() for i in config.items],
        "variants": {v.name: run_variant(config, v) for v in config.variants},
    }
    config.output_dir.mkdir(parents=True, exist_ok=True)
    (config.output_dir / SCORES_FILE).write_text(json.dumps(result, indent=1))
    return result


def compare(
    result: dict[str, Any], baseline: str, candidate: str, *, seed: int = 0
) -> dict[str, list[PairedDiff]]:
    """Paired bootstrap differences (candidate - baseline) per eval set and metric."""
    sets: dict[str, list[int]] = {}
    for index, item in enumerate(result["items"]):
        sets.setdefault(item["set"], []).append(index)
    base_scores = result["variants"][baseline]["scores"]
    cand_scores = result["variants"][candidate]["scores"]
    out: dict[str, list[PairedDiff]] = {}
    for name, indices in sets.items():
        out[name] = [
            paired_bootstrap(
                metric,
                [base_scores[i][metric] for i in indices],
                [cand_scores[i][metric] for i in indices],
                seed=seed,
            )
            for metric in METRICS
        ]
    return out


def main(argv: list[str] | None = None) -> None:
    """CLI entry: `python -m raftloop_trainer.evaluate --config eval_config.json`."""
    parser = argparse.ArgumentParser(description="Evaluate the base model and adapters.")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    from raftloop_core.logs import configure_logging

    configure_logging("trainer-eval", level=os.environ.get("RAFTLOOP_LOG_LEVEL", "INFO"))
    evaluate(EvalConfig.model_validate_json(args.config.read_text()))


if __name__ == "__main__":
    main()
