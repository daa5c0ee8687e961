"""Evaluation and training on the demo knowledge base, outside the service (CLI, tests, bench).

The demo package's own split is used: its train questions (question, answer, oracle passage) are
the curated examples and its hold-out questions, asked with the oracle chunk and distractors in
the same RAFT prompt format, are the evaluation set; its general questions are the regression
set. This is demo tooling: the service's runs never read the demo package (a tenant's regression
set is its own, in the store), except for local distractors when no rag is configured.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

from raftloop_core.registry import AdapterRegistry
from raftloop_trainer.builder import build_set, regression_set, write_examples
from raftloop_trainer.distractors import LocalDistractorSource
from raftloop_trainer.domain import GatePolicy, RegressionItem, decide
from raftloop_trainer.errors import error_analysis
from raftloop_trainer.evaluate import (
    EvalConfig,
    EvalItem,
    Variant,
    compare,
    evaluate,
    holdout_items,
    pairwise_summary,
)
from raftloop_trainer.judging import JudgeConfig
from raftloop_trainer.raft import Chunk, RaftSource
from raftloop_trainer.report import report_payload, write_report
from raftloop_trainer.settings import TrainerSettings
from raftloop_trainer.train import LoraParams, TrainConfig, train


def demo_sources(split: str) -> list[RaftSource]:
    """The demo knowledge base's questions of one split as RAFT sources.

    The oracle is the document chunk that contains the question's passage (as rag would return
    it), or the passage itself when it spans two chunks.
    """
    import raftloop_demo_kb as kb

    local = LocalDistractorSource.from_demo_kb()
    picked = {"train": kb.train_questions, "holdout": kb.holdout_questions}[split]()
    sources = []
    for q in picked:
        oracle = local.containing(q.passage) or Chunk(f"{q.document}#{q.id}", q.passage, q.document)
        sources.append(RaftSource(q.id, q.question, q.answer, (oracle,)))
    return sources


def demo_regression_items() -> list[RegressionItem]:
    """The demo handbook's general questions (what `raftloop demo` sets for its tenant)."""
    import raftloop_demo_kb as kb

    return [RegressionItem(q.id, q.question, q.answer) for q in kb.regression_questions()]


def demo_eval_items(*, distractors: int, regression: int, seed: int = 43) -> list[EvalItem]:
    """The demo hold-out questions (oracle always shown) plus general regression questions."""
    local = LocalDistractorSource.from_demo_kb()
    sources = demo_sources("holdout")
    held = build_set(sources, local, k=distractors, p_oracle=1.0, seed=seed)
    questions = {s.example_id: s.question for s in sources}
    return holdout_items(held, questions) + regression_set(demo_regression_items(), regression)


def shuffled_answers(sources: list[RaftSource], seed: int = 0) -> list[RaftSource]:
    """The same questions with answers shuffled among them: a deliberately bad dataset."""
    answers = [s.answer for s in sources]
    random.Random(seed).shuffle(answers)
    return [dataclasses.replace(s, answer=a) for s, a in zip(sources, answers, strict=True)]


def train_on_demo(
    base_model_dir: Path,
    out: Path,
    params: LoraParams,
    *,
    limit: int | None = None,
    distractors: int = 1,
    p_oracle: float = 0.8,
    bad: bool = False,
) -> Path:
    """Train an adapter on the demo train split (or on shuffled answers when `bad`)."""
    sources = demo_sources("train")[:limit]
    if bad:
        sources = shuffled_answers(sources)
    local = LocalDistractorSource.from_demo_kb()
    built = build_set(sources, local, k=distractors, p_oracle=p_oracle, seed=params.seed)
    examples = write_examples(out / "train.jsonl", built)
    config = TrainConfig(
        base_model_dir=base_model_dir, examples_path=examples, output_dir=out, params=params
    )
    return train(config)


def compare_on_demo(
    base_model_dir: Path,
    baseline: Variant,
    candidate: Variant,
    out: Path,
    *,
    items: list[EvalItem],
    policy: GatePolicy | None = None,
    max_new_tokens: int = 64,
    judge: JudgeConfig | None = None,
    judge_api_key: str | None = None,
    not_judged: str | None = None,
) -> dict[str, Any]:
    """Evaluate two variants on the same items, gate the candidate, write the report.

    With `judge`, the candidate is also judged pairwise against the baseline on the hold-out
    items; otherwise the report says the win rate was not measured (`not_judged` says why). The
    report's error analysis has a column per variant ("base" for one without an adapter).
    """
    variants = [baseline] if baseline == candidate else [baseline, candidate]
    pair = judge is not None and len(variants) == 2
    config = EvalConfig(
        base_model_dir=base_model_dir,
        items=items,
        variants=variants,
        output_dir=out,
        max_new_tokens=max_new_tokens,
        judge=judge if pair else None,
        judge_pairs=[(baseline.name, candidate.name)] if pair else [],
    )
    result = evaluate(config, judge_api_key=judge_api_key)
    diffs = compare(result, baseline.name, candidate.name)
    pairwise = None
    if len(variants) == 2:
        pairwise = pairwise_summary(result, not_measured=not_judged)
    decision = None
    if policy is not None:
        decision = decide(
            diffs.get("holdout", []),
            diffs.get("regression", []),
            policy,
            judge_win_rate=pairwise.get("win_rate") if pairwise else None,
        )
    columns = [
        ("base" if v.adapter_dir is None else label, v.name)
        for label, v in zip(("baseline", "candidate"), variants, strict=False)
    ]
    payload = report_payload(
        title=f"demo KB: {candidate.name} vs {baseline.name}",
        baseline=baseline.name,
        candidate=candidate.name,
        diffs=diffs,
        decision=decision,
        pairwise=pairwise,
        extra={"error_analysis": error_analysis(result, columns)},
    )
    write_report(out, payload)
    return payload


def evaluate_on_demo(
    settings: TrainerSettings, adapter_id: str | None, out: Path, *, regression: int
) -> dict[str, Any]:
    """`raftloop eval`: the base model, and an adapter against it, on the demo sets."""
    from raftloop_trainer.main import base_model, judge_api_key

    path, _ = base_model(settings)
    judge, not_judged = settings.judge_config()
    items = demo_eval_items(distractors=settings.distractors, regression=regression)
    base = Variant(name="base")
    candidate = base
    if adapter_id is not None:
        folder = AdapterRegistry(settings.registry_root).get(adapter_id)
        candidate = Variant(name=f"adapter:{adapter_id[:12]}", adapter_dir=folder)
    policy = settings.gate_policy() if adapter_id else None
    return compare_on_demo(
        path,
        base,
        candidate,
        out,
        items=items,
        policy=policy,
        max_new_tokens=settings.eval_max_new_tokens,
        judge=judge,
        judge_api_key=judge_api_key(settings),
        not_judged=not_judged,
    )
