"""The gate's candidates on SmolLM2, CPU: SFT-only vs SFT+DPO vs searched SFT, on the demo (#20).

One trainer run as the service runs it: `Runner` with its train and eval jobs in child
processes, a SQLite dataset store, a local registry and the local pairwise judge (the base
model, both orders). The data is the demo knowledge base's, stored as reviewers would leave it:

- BENCH_RECIPES_TRAIN (48) of its train questions as corrections: chosen is the demo's reference
  answer, rejected the base model's own greedy answer to the same RAFT prompt (oracle chunk and
  one distractor), which is what a reviewer corrects in the live loop. A base answer equal to
  the reference gives no pair (the store refuses it).
- BENCH_RECIPES_HOLDOUT (40) of its hold-out questions as held-out examples (the split is by id
  hash, so ids are drawn until each lands on its side), and 16 general questions as the tenant's
  regression set.

TRAINER_RECIPE=sft+dpo with the CPU defaults, and TRAINER_HPO with BENCH_RECIPES_HPO_TRIALS (2:
the defaults and one searched trial) within BENCH_RECIPES_HPO_MINUTES (12). The gate evaluates
every candidate against the base model (nothing serves yet) and gates the highest gain. Figures
per candidate: hold-out token F1 gain with its 95% CI and the judge's win rate with its CI.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

TITLE = "Trainer candidates: SFT-only vs SFT+DPO vs searched SFT on the demo (SmolLM2, CPU)"
TRAIN = int(os.environ.get("BENCH_RECIPES_TRAIN", "48"))
HOLDOUT = int(os.environ.get("BENCH_RECIPES_HOLDOUT", "40"))
HPO_TRIALS = int(os.environ.get("BENCH_RECIPES_HPO_TRIALS", "2"))
HPO_MINUTES = float(os.environ.get("BENCH_RECIPES_HPO_MINUTES", "12"))
FRACTION = 0.5
TENANT = "bench"


class _Sink:
    """Keeps what the run publishes (no broker in this benchmark)."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, Any]] = []

    async def publish(self, topic: Any, event: Any) -> None:
        self.events.append((topic, event))


def _example_id(holdout: bool) -> uuid.UUID:
    from raftloop_trainer.domain import is_holdout

    while True:
        candidate = uuid.uuid4()
        if is_holdout(str(candidate), FRACTION) == holdout:
            return candidate


def _base_answers(model_dir: Path, sources: list[Any]) -> list[str]:
    """The base model's greedy final answers to the train questions, as the RAFT prompt asks."""
    from raftloop_trainer.builder import build_set
    from raftloop_trainer.distractors import LocalDistractorSource
    from raftloop_trainer.evaluate import EvalConfig, generate, holdout_items
    from raftloop_trainer.raft import final_answer
    from raftloop_trainer.train import load_model

    built = build_set(sources, LocalDistractorSource.from_demo_kb(), k=1, p_oracle=1.0, seed=5)
    items = holdout_items(built)
    config = EvalConfig(
        base_model_dir=model_dir, items=items, variants=[], output_dir=model_dir, device="cpu"
    )
    tokenizer, model = load_model(model_dir, "cpu")
    model.eval()
    return [final_answer(o) for o in generate(model, tokenizer, items, config)]


def _event(source: Any, holdout: bool, base: str, rejected: str | None) -> Any:
    from raftloop_core import events as ev

    return ev.ExampleCurated(
        tenant=TENANT,
        example_id=_example_id(holdout),
        interaction_id=uuid.uuid4(),
        source="corrected" if rejected is not None else "approved",
        messages=[ev.ChatMessage(role="user", content=source.question)],
        question=source.question,
        answer=source.answer,
        oracle_chunks=[
            ev.RetrievedChunk(
                chunk_id=c.chunk_id, document_id=c.document_id or "demo", text=c.text, score=1.0
            )
            for c in source.oracle
        ],
        base_model=base,
        rejected_answer=rejected,
    )


def _fill(store: Any, model_dir: Path, base: str) -> dict[str, int]:
    from raftloop_trainer.metrics import normalize_answer
    from raftloop_trainer.offline import demo_regression_items, demo_sources

    train = demo_sources("train")[:TRAIN]
    answers = _base_answers(model_dir, train)
    same = 0
    for source, answer in zip(train, answers, strict=True):
        equal = normalize_answer(answer) == normalize_answer(source.answer)
        same += equal
        store.add(_event(source, False, base, None if equal else answer))
    for source in demo_sources("holdout")[:HOLDOUT]:
        store.add(_event(source, True, base, None))
    store.replace_regression(TENANT, demo_regression_items()[:16])
    return {"train": len(train), "base_answers_equal_to_reference": same}


def _row_figures(row: dict[str, Any]) -> dict[str, float | str]:
    f1 = row["holdout"]["token_f1"]
    key = row["label"].replace(" (tuned)", "_tuned").replace("+", "_")
    out: dict[str, float | str] = {
        f"{key}_token_f1": round(f1["candidate"], 3),
        f"{key}_gain": round(f1["diff"], 3),
        f"{key}_gain_ci": f"{f1['ci_low']:+.3f} .. {f1['ci_high']:+.3f}",
    }
    pairwise = row.get("pairwise") or {}
    if pairwise.get("measured"):
        out[f"{key}_win_rate"] = round(pairwise["win_rate"], 3)
        out[f"{key}_win_rate_ci"] = f"{pairwise['ci_low']:.3f} .. {pairwise['ci_high']:.3f}"
    else:
        out[f"{key}_win_rate"] = f"not measured: {pairwise.get('reason')}"
    return out


def _figures(report: dict[str, Any], filled: dict[str, int], seconds: float) -> dict[str, Any]:
    rows = report.get("candidates") or []
    [f1] = [r for r in report["sets"]["holdout"] if r["metric"] == "token_f1"]
    figures: dict[str, Any] = {
        "train_examples": report["data"]["train_examples"],
        "holdout_examples": report["data"]["holdout_examples"],
        "base_answers_equal_to_reference": filled["base_answers_equal_to_reference"],
        "base_token_f1": round(f1["baseline"], 3),
    }
    dpo = (report.get("preference") or {}).get("dpo") or {}
    figures["dpo_stage"] = dpo.get("state", "none")
    if dpo.get("state") == "done":
        figures |= {"dpo_pairs": dpo["pairs"], "dpo_steps": dpo["steps"]}
    for row in rows:
        figures |= _row_figures(row)
    figures["chosen"] = next((r["label"] for r in rows if r["chosen"]), "sft+dpo")
    figures["gate"] = "promote" if report["decision"]["promote"] else "reject"
    hpo = report.get("hpo") or {}
    if hpo.get("skipped_reason"):
        figures["hpo"] = f"skipped: {hpo['skipped_reason']}"
    elif hpo:
        figures |= {
            "hpo_trials": len(hpo["trials"]),
            "hpo_default_validation_loss": round(hpo["default_value"], 4),
            "hpo_best_validation_loss": round(hpo["best_value"], 4),
            "hpo_beats_defaults": hpo["beats_defaults"],
            "hpo_chosen": ", ".join(f"{k}={v}" for k, v in (hpo.get("best_params") or {}).items()),
        }
    figures["run_seconds"] = round(seconds)
    return figures


def run() -> dict[str, float | int | str]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from raftloop_core.registry import AdapterRegistry
    from raftloop_core.settings import RuntimeSettings
    from raftloop_trainer.distractors import LocalDistractorSource
    from raftloop_trainer.hpo import HpoParams
    from raftloop_trainer.main import base_model
    from raftloop_trainer.runner import Runner
    from raftloop_trainer.settings import TrainerSettings
    from raftloop_trainer.store import DatasetStore

    with tempfile.TemporaryDirectory(prefix="bench-recipes-") as tmp:
        settings = TrainerSettings(
            runtime=RuntimeSettings(data_dir=Path(tmp)),
            recipe="sft+dpo",
            hpo=HpoParams(trials=HPO_TRIALS, minutes=HPO_MINUTES),
            device="cpu",
        )
        model_dir, name = base_model(settings)
        store = DatasetStore(f"sqlite:///{Path(tmp) / 'dataset.sqlite3'}", FRACTION)
        filled = _fill(store, model_dir, name)
        runner = Runner(
            settings=settings,
            store=store,
            registry=AdapterRegistry(settings.registry_root),
            sink=_Sink(),
            distractors=LocalDistractorSource.from_demo_kb(),
            base_model_dir=model_dir,
            base_model=name,
        )
        started = time.perf_counter()
        result = asyncio.run(runner.run(TENANT, "bench"))
        return _figures(result["report"], filled, time.perf_counter() - started)


def notes(figures: dict[str, float | int | str]) -> str:
    return (
        f"One run, {figures.get('train_examples')} training and {figures.get('holdout_examples')} "
        "held-out demo questions; each candidate is compared with the base model on the same "
        "hold-out (gain and 95% CI: paired bootstrap of token F1; win rate: the local SmolLM2 "
        "judge, both orders, a tie counts half). The gate took the highest gain "
        f"({figures.get('chosen')}) and decided {figures.get('gate')} on its interval alone. "
        "Rejected answers are the base model's greedy answers in the RAFT prompt, not the "
        "gateway's live answers; the search's objective is validation loss on a fifth of the "
        "training examples, so the tuned candidate trains on the same data as the others."
    )
