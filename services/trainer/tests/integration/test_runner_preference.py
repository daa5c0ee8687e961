"""A run with TRAINER_RECIPE=sft+dpo on the tiny Llama: pairs from the store reach the DPO stage,
the pairs' lineage names the run's dataset version, the report and finished event say so, and the
gate compares the SFT-only and SFT+DPO adapters on the same hold-out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from raftloop_core.events import Event, ExampleCurated, TrainingRunFinished
from raftloop_core.registry import AdapterRegistry
from raftloop_core.settings import RuntimeSettings
from raftloop_core.testing import plan_examples
from raftloop_core.topics import Topic
from raftloop_trainer.domain import is_holdout
from raftloop_trainer.hpo import HpoParams
from raftloop_trainer.raft import Chunk
from raftloop_trainer.runner import Runner
from raftloop_trainer.settings import TrainerSettings
from raftloop_trainer.store import DatasetStore
from raftloop_trainer.train import DpoParams, LoraParams

pytestmark = pytest.mark.integration

BASE = "tiny"


class FakeDistractors:
    """A `DistractorSource` that returns one fixed chunk."""

    def distractors(
        self, question: str, *, k: int, exclude_ids: Sequence[str], tenant: str
    ) -> list[Chunk]:
        return [Chunk("other#0", "Backups run every night at two.", "other")][:k]


class RecordingSink:
    """An `EventSink` that keeps what the run publishes."""

    def __init__(self) -> None:
        self.events: list[tuple[Topic, Event]] = []

    async def publish(self, topic: Topic, event: Event) -> None:
        self.events.append((topic, event))


def corrected(event: ExampleCurated) -> ExampleCurated:
    return event.model_copy(update={"source": "corrected", "rejected_answer": "It is free."})


async def test_an_sft_dpo_run_trains_on_the_stored_pairs_and_records_them(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    settings = TrainerSettings(
        runtime=RuntimeSettings(data_dir=tmp_path / "var"),
        recipe="sft+dpo",
        min_pairs=2,
        lora=LoraParams(max_length=256, max_steps=2, batch_size=2, warmup_steps=0),
        dpo=DpoParams(max_steps=2, batch_size=2),
        eval_max_new_tokens=8,
        judge_local=False,
        min_holdout_items=1,
        device="cpu",
    )
    store = DatasetStore(f"sqlite:///{tmp_path / 'dataset.sqlite3'}", holdout_fraction=0.5)
    sink = RecordingSink()
    runner = Runner(
        settings=settings,
        store=store,
        registry=AdapterRegistry(tmp_path / "registry"),
        sink=sink,
        distractors=FakeDistractors(),
        base_model_dir=tiny_model_dir,
        base_model=BASE,
    )
    events = plan_examples(10, base_model=BASE, tenant="acme")
    fixes = [e for e in events if not is_holdout(str(e.example_id), 0.5)][:3]
    assert len(fixes) >= 2
    for event in events:
        store.add(corrected(event) if event in fixes else event)

    result = await runner.run("acme", "test")

    report = result["report"]
    assert report["preference"]["dpo"]["state"] == "done"
    assert report["preference"]["dpo"]["pairs"] == len(fixes)
    job = next((settings.state_dir / "jobs").iterdir())
    pairs = [json.loads(line) for line in (job / "pairs.jsonl").read_text().splitlines()]
    assert {p["example_id"] for p in pairs} == {str(e.example_id) for e in fixes}
    assert all(p["rejected"].endswith("Answer: It is free.") for p in pairs)
    lineage = {p["example_id"]: p for p in store.pairs("acme")}
    for fix in fixes:
        trained = lineage[str(fix.example_id)]["trained_in"]
        assert trained == [
            {"run_id": result["run_id"], "dataset_version": report["dataset_version"]}
        ]
    [finished] = [e for t, e in sink.events if t == Topic.TRAINING_RUN_FINISHED]
    assert isinstance(finished, TrainingRunFinished)
    assert finished.metrics["train.dpo.pairs"] == len(fixes)
    assert finished.metrics["train.dpo.skipped"] == 0.0
    md = (Path(str(finished.report_path)).parent / "report.md").read_text()
    assert f"DPO on {len(fixes)} preference pairs from the sft" in md

    assert_recipes_compared(runner, result, finished.adapter_id, md)


def assert_recipes_compared(
    runner: Runner, result: dict[str, Any], finished_adapter: str | None, md: str
) -> None:
    """Both recipes' adapters were evaluated against what serves; the higher gain was gated."""
    report = result["report"]
    rows = report["candidates"]
    assert [r["label"] for r in rows] == ["sft+dpo", "sft"]
    assert len({r["adapter_id"] for r in rows}) == 2
    [chosen] = [r for r in rows if r["chosen"]]
    gains = {r["label"]: r["holdout"]["token_f1"]["diff"] for r in rows}
    assert gains[chosen["label"]] == max(gains.values())
    assert result["adapter_id"] == chosen["adapter_id"] == finished_adapter
    assert report["decision"]["reasons"][0].startswith(f"candidate {chosen['label']} chosen")
    for row in rows:
        card = runner.registry.card(row["adapter_id"])
        assert card.hyperparameters["candidate"] == row["label"]
        assert card.run_id == result["run_id"]
    assert "## candidates" in md
    labels = [c["label"] for c in report["error_analysis"]["columns"]]
    other = next(r["label"] for r in rows if not r["chosen"])
    assert labels[-2:] == (
        ["candidate", f"candidate ({other})"]
        if chosen["label"] == "sft+dpo"
        else [f"candidate ({other})", "candidate"]
    )


async def test_a_searched_run_gates_the_tuned_adapter_against_the_defaults(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Hopeless defaults and a one-point space that learns: the search must beat the defaults.
    settings = TrainerSettings(
        runtime=RuntimeSettings(data_dir=tmp_path / "var"),
        lora=LoraParams(max_length=256, epochs=1, batch_size=4, warmup_steps=0, learning_rate=1e-7),
        hpo=HpoParams(trials=2, learning_rate=(1e-2, 1e-2), rank=(8,), epochs=(2, 2)),
        eval_max_new_tokens=8,
        judge_local=False,
        min_holdout_items=1,
        device="cpu",
    )
    store = DatasetStore(f"sqlite:///{tmp_path / 'dataset.sqlite3'}", holdout_fraction=0.3)
    runner = Runner(
        settings=settings,
        store=store,
        registry=AdapterRegistry(tmp_path / "registry"),
        sink=RecordingSink(),
        distractors=FakeDistractors(),
        base_model_dir=tiny_model_dir,
        base_model=BASE,
    )
    events = plan_examples(24, base_model=BASE, tenant="acme")
    # Ids are random: enough training examples for a validation split whatever the hold-out.
    assert sum(not is_holdout(str(e.example_id), 0.3) for e in events) >= 10
    # One example whose retrieval missed: its answer is in the knowledge base (the fixed chunk).
    missed = events[0].model_copy(
        update={"answer": "Backups run every night at two.", "oracle_chunks": []}
    )
    for event in [missed, *events[1:]]:
        store.add(event)

    result = await runner.run("acme", "test")

    report = result["report"]
    data = report["data"]
    assert data["oracle_recovered_train"] + data["oracle_recovered_holdout"] == 1, data
    assert report["hpo"]["beats_defaults"] is True, report["hpo"]
    assert [t["state"] for t in report["hpo"]["trials"]] == ["COMPLETE", "COMPLETE"]
    rows = report["candidates"]
    assert [r["label"] for r in rows] == ["sft", "sft (tuned)"]
    tuned = runner.registry.card(rows[1]["adapter_id"]).hyperparameters
    assert tuned["learning_rate"] == pytest.approx(1e-2)
    assert runner.registry.card(rows[0]["adapter_id"]).hyperparameters["learning_rate"] == 1e-7
    run_md = (settings.state_dir / "runs" / result["run_id"] / "report.md").read_text()
    assert "## hyper-parameter search" in run_md
    assert "the chosen values beat the defaults" in run_md
    assert "| sft (tuned)" in run_md
