"""Evaluation: generate answers with the base model or an adapter, score them, compare pairs.

`python -m raftloop_trainer.evaluate --config <run>/eval_config.json` runs in its own process
(like training) and writes `<output_dir>/scores.json`: the items (hold-out ones with the texts of
their documents and oracle), and per variant its `outputs`, `scores`, `new_tokens` and
`finish_reasons` ("stop", or "length" when `max_new_tokens` cut the answer).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from raftloop_core.pairwise import PairVerdict
from raftloop_trainer.encoding import render_prompt
from raftloop_trainer.judging import (
    EndpointJudgeModel,
    JudgeConfig,
    JudgeModel,
    LocalJudgeModel,
    judge_pairs,
)
from raftloop_trainer.metrics import METRICS, PairedDiff, paired_bootstrap, score_all
from raftloop_trainer.pairwise import win_rate
from raftloop_trainer.raft import RaftExample, final_answer

log = logging.getLogger("raftloop_trainer.evaluate")

EvalSet = Literal["holdout", "regression"]
SCORES_FILE = "scores.json"
JUDGE_KEY_ENV = "TRAINER_JUDGE_API_KEY"
REGRESSION_SYSTEM = "You are a helpful assistant. Answer briefly."


class EvalItem(BaseModel):
    """One question to answer: the prompt messages and the reference answer."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    set: EvalSet
    messages: list[dict[str, str]]
    reference: str
    question: str | None = Field(default=None, description="The bare question, for the judge.")
    documents: list[str] = Field(
        default_factory=list, description="Texts of the chunks the prompt shows (hold-out)."
    )
    oracle: list[str] = Field(
        default_factory=list,
        description="Texts of the oracle chunks among them; empty: no oracle was retrieved.",
    )


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
    judge: JudgeConfig | None = Field(
        default=None, description="Judge `judge_pairs` pairwise on the hold-out items."
    )
    judge_pairs: list[tuple[str, str]] = Field(
        default_factory=list,
        description="(baseline, candidate) variant names; the first is the report's own pair.",
    )

    @model_validator(mode="after")
    def _pairs_name_variants(self) -> EvalConfig:
        names = {v.name for v in self.variants}
        for pair in self.judge_pairs:
            if not set(pair) <= names:
                raise ValueError(f"judge pair {pair} must name two of the variants {sorted(names)}")
        return self


def holdout_items(
    examples: Sequence[RaftExample], questions: Mapping[str, str] | None = None
) -> list[EvalItem]:
    """Hold-out items in the RAFT prompt format; the reference is the example's final answer.

    `questions` (example id to the bare question) lets the pairwise judge see the question
    without the documents.
    """
    return [
        EvalItem(
            item_id=e.example_id,
            set="holdout",
            messages=e.prompt,
            reference=final_answer(e.target),
            question=(questions or {}).get(e.example_id),
            documents=list(e.documents),
            oracle=list(e.oracle),
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


def generation_lengths(
    rows: Sequence[Sequence[int]], stop_ids: Collection[int]
) -> list[tuple[int, str]]:
    """Per generated row: tokens before its first stop token, and "stop" or "length" (none)."""
    out: list[tuple[int, str]] = []
    for row in rows:
        stop = next((i for i, token in enumerate(row) if token in stop_ids), None)
        out.append((len(row), "length") if stop is None else (stop, "stop"))
    return out


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids that end a generation: the generation config's and the tokenizer's EOS."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return {int(i) for i in [*ids, tokenizer.eos_token_id] if i is not None}


def generate(
    model: Any, tokenizer: Any, items: Sequence[EvalItem], config: EvalConfig
) -> list[str]:
    """Greedy answers for every item, in batches with left padding."""
    return generate_counted(model, tokenizer, items, config)[0]


def generate_counted(
    model: Any, tokenizer: Any, items: Sequence[EvalItem], config: EvalConfig
) -> tuple[list[str], list[tuple[int, str]]]:
    """Greedy answers, and each one's generated tokens and finish reason (`generation_lengths`)."""
    import torch

    tokenizer.padding_side = "left"
    stop_ids = stop_token_ids(model, tokenizer)
    outputs: list[str] = []
    lengths: list[tuple[int, str]] = []
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
        lengths += generation_lengths(new.tolist(), stop_ids)
    return outputs, lengths


def score_outputs(items: Sequence[EvalItem], outputs: Sequence[str]) -> list[dict[str, float]]:
    """Metric scores of each output's final answer against its reference."""
    return [score_all(final_answer(o), i.reference) for i, o in zip(items, outputs, strict=True)]


def run_variant(
    config: EvalConfig, variant: Variant, tokenizer: Any, base: Any
) -> tuple[dict[str, Any], Any]:
    """Answers and scores of one variant on the loaded base model; the base model back.

    An adapter is attached for the variant and removed afterwards (peft `unload`, no merge), so
    every variant and the local judge share one copy of the base weights.
    """
    model = base
    if variant.adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, str(variant.adapter_dir))
    model.eval()
    started = time.monotonic()
    outputs, lengths = generate_counted(model, tokenizer, config.items, config)
    log.info(
        "variant evaluated",
        extra={"variant": variant.name, "seconds": round(time.monotonic() - started, 1)},
    )
    if variant.adapter_dir is not None:
        base = model.unload()
    return {
        "outputs": outputs,
        "scores": score_outputs(config.items, outputs),
        "new_tokens": [n for n, _ in lengths],
        "finish_reasons": [reason for _, reason in lengths],
    }, base


def question_of(item: EvalItem | dict[str, Any]) -> str:
    """What the model was asked: its last user turn (the RAFT prompt with its documents)."""
    messages = item.messages if isinstance(item, EvalItem) else item["messages"]
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def run_pairwise(
    config: EvalConfig,
    setup: JudgeConfig,
    pair: tuple[str, str],
    variants: dict[str, Any],
    tokenizer: Any,
    base: Any,
    judge_api_key: str | None,
) -> dict[str, Any]:
    """Candidate vs baseline on the hold-out items, judged pairwise with position swap."""
    baseline, candidate = pair
    indices = [i for i, item in enumerate(config.items) if item.set == "holdout"]
    if setup.kind == "local":
        base.eval()
        judge: JudgeModel = LocalJudgeModel(base, tokenizer, batch_size=config.batch_size)
    else:
        judge = EndpointJudgeModel(setup, judge_api_key or "EMPTY")
    started = time.monotonic()
    # The final answers are judged (what the metrics score too), with the approved answer as
    # the reference: short prompts keep a CPU judge within minutes.
    records = judge_pairs(
        judge,
        [config.items[i].question or question_of(config.items[i]) for i in indices],
        [config.items[i].reference for i in indices],
        [final_answer(variants[candidate]["outputs"][i]) for i in indices],
        [final_answer(variants[baseline]["outputs"][i]) for i in indices],
    )
    log.info("pairwise judged", extra={"seconds": round(time.monotonic() - started, 1)})
    return {
        "judge": setup.label(config.base_model_dir.name),
        "baseline": baseline,
        "candidate": candidate,
        "verdicts": [
            {"item_id": config.items[i].item_id, **r} for i, r in zip(indices, records, strict=True)
        ],
    }


def evaluate(config: EvalConfig, *, judge_api_key: str | None = None) -> dict[str, Any]:
    """Run every variant (and the pairwise judge when configured); write `scores.json`."""
    from raftloop_trainer.train import load_model, resolve_device

    tokenizer, base = load_model(config.base_model_dir, resolve_device(config.device))
    variants: dict[str, Any] = {}
    for variant in config.variants:
        variants[variant.name], base = run_variant(config, variant, tokenizer, base)
    result: dict[str, Any] = {
        "items": [i.model_dump() for i in config.items],
        "variants": variants,
        "max_new_tokens": config.max_new_tokens,
    }
    if config.judge is not None:
        # One judged record per candidate; `pairwise` stays the first pair's, as one-candidate
        # reports read it.
        judged = {
            pair[1]: run_pairwise(
                config, config.judge, pair, variants, tokenizer, base, judge_api_key
            )
            for pair in config.judge_pairs
        }
        if judged:
            result["pairwise"] = judged[config.judge_pairs[0][1]]
            result["pairwise_by_candidate"] = judged
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


def pairwise_summary(
    result: dict[str, Any], *, not_measured: str | None = None, candidate: str | None = None
) -> dict[str, Any]:
    """The win rate of the judged pairs in `result`, or why it was not measured.

    Args:
        result: an evaluation result (`scores.json`).
        not_measured: the reason when no judge was configured for this evaluation.
        candidate: whose pairs against the baseline (None: the first judged pair's).
    """
    pairwise = result.get("pairwise")
    if candidate is not None:
        pairwise = (result.get("pairwise_by_candidate") or {}).get(candidate)
    if pairwise is None:
        return {"measured": False, "reason": not_measured or "no pairwise judge configured"}
    verdicts = [
        None
        if "error" in v
        else PairVerdict(v["outcome"], v["consistent"], v["first"], v["second"])
        for v in pairwise["verdicts"]
    ]
    head = {k: pairwise[k] for k in ("judge", "baseline", "candidate")}
    try:
        rate = win_rate(verdicts)
    except ValueError as exc:
        errors = [v["error"] for v in pairwise["verdicts"] if "error" in v]
        reason = f"{exc} (first error: {errors[0]})" if errors else str(exc)
        return {"measured": False, "reason": reason, **head, "unjudged": len(verdicts)}
    return {"measured": True, **head, **rate.as_dict()}


def main(argv: list[str] | None = None) -> None:
    """CLI entry: `python -m raftloop_trainer.evaluate --config eval_config.json`."""
    parser = argparse.ArgumentParser(description="Evaluate the base model and adapters.")
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    from raftloop_core.logs import configure_logging

    configure_logging("trainer-eval", level=os.environ.get("RAFTLOOP_LOG_LEVEL", "INFO"))
    # The key comes from the environment, never from the config file written to disk.
    config = EvalConfig.model_validate_json(args.config.read_text())
    evaluate(config, judge_api_key=os.environ.get(JUDGE_KEY_ENV))


if __name__ == "__main__":
    main()
