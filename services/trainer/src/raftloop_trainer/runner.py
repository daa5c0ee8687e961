"""One training run end to end: snapshot, RAFT build, train job, eval job, gate, promotion.

The heavy work runs in child processes (`raftloop_trainer.train`, `raftloop_trainer.evaluate`)
that the runner awaits, so a service running it keeps consuming. A file lock keeps it to one run
at a time, across the service and the CLI.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftloop_core.events import TrainingRunFinished
from raftloop_core.registry import AdapterCard, AdapterRegistry
from raftloop_core.topics import Topic
from raftloop_trainer import promotion
from raftloop_trainer.adapters import EventSink, RunLock, run_job
from raftloop_trainer.builder import (
    DistractorSource,
    build_set,
    regression_set,
    sources_from_rows,
    write_examples,
)
from raftloop_trainer.domain import GateDecision, dataset_version, decide
from raftloop_trainer.errors import error_analysis, error_counts
from raftloop_trainer.evaluate import (
    JUDGE_KEY_ENV,
    SCORES_FILE,
    EvalConfig,
    EvalItem,
    Variant,
    compare,
    holdout_items,
    pairwise_summary,
)
from raftloop_trainer.preference import build_pairs, write_pairs
from raftloop_trainer.progress import read_progress, write_json_atomic
from raftloop_trainer.report import (
    data_summary,
    flat_metrics,
    pairwise_metrics,
    preference_metrics,
    regression_summary,
    report_payload,
    write_report,
)
from raftloop_trainer.settings import TrainerSettings
from raftloop_trainer.train import ADAPTER_DIR, PROGRESS_FILE, STAGES_FILE, TrainConfig

log = logging.getLogger(__name__)


class NothingToTrain(RuntimeError):
    """The dataset has no training examples for this tenant and base model."""


@dataclass
class Runner:
    """Runs training jobs for one base model with the given ports."""

    settings: TrainerSettings
    store: Any
    registry: AdapterRegistry
    sink: EventSink
    distractors: DistractorSource
    base_model_dir: Path
    base_model: str
    judge_api_key: str | None = None

    def __post_init__(self) -> None:
        self.lock = RunLock(self.settings.state_dir / "run.lock")
        self.current: dict[str, Any] | None = None

    def status(self, tenant: str | None = None) -> dict[str, Any]:
        """The run in progress (with its step, loss and eta) and the latest runs.

        Args:
            tenant: only this tenant's runs, and the run in progress only if it is one of them;
                None: every tenant's.
        """
        current = dict(self.current) if self.current else None
        if current and tenant is not None and current["tenant"] != tenant:
            current = None
        if current:
            current["progress"] = read_progress(Path(current["job_dir"]) / PROGRESS_FILE)
        return {"running": current, "runs": self.store.runs(limit=10, tenant=tenant)}

    async def run(self, tenant: str, trigger: str) -> dict[str, Any]:
        """Train, evaluate and gate one adapter from the tenant's current dataset.

        Raises:
            RunInProgress: another run holds the lock.
            NothingToTrain: no training examples yet.
        """
        self.lock.acquire()
        try:
            return await self._run_locked(tenant, trigger)
        finally:
            self.current = None
            self.lock.release()

    async def _run_locked(self, tenant: str, trigger: str) -> dict[str, Any]:
        snap = await asyncio.to_thread(self.store.snapshot, tenant, self.base_model)
        if not snap.train:
            raise NothingToTrain(
                f"no training examples for tenant {tenant!r} and {self.base_model}; "
                "curate some in the review UI first"
            )
        if self.settings.recipe == "dpo" and len(snap.pairs) < self.settings.min_pairs:
            raise NothingToTrain(
                f"TRAINER_RECIPE is dpo and tenant {tenant!r} has {len(snap.pairs)} preference "
                f"pairs of the {self.settings.min_pairs} it needs (TRAINER_MIN_PAIRS); pairs come "
                "from corrections in the review UI"
            )
        pair_rows = [{"pair_of": p["example_id"], **p} for p in snap.pairs]
        version = dataset_version(snap.train + snap.holdout + pair_rows)
        run_id = f"run-{uuid.uuid4().hex[:12]}"
        job_dir = self._job_dir(version)
        self.current = {"run_id": run_id, "tenant": tenant, "job_dir": str(job_dir)}
        await asyncio.to_thread(
            self.store.start_run, run_id, tenant, self.base_model, trigger, snap.max_seq
        )
        self.store.update_run(
            run_id,
            dataset_version=version,
            train_examples=len(snap.train),
            holdout_examples=len(snap.holdout),
        )
        log.info("training run started", extra={"run_id": run_id, "dataset_version": version})
        try:
            return await self._train_and_gate(run_id, tenant, version, snap, job_dir)
        except Exception as exc:
            self.store.finish_run(run_id, "failed", error=str(exc)[:4000])
            await self.sink.publish(
                Topic.TRAINING_RUN_FINISHED,
                TrainingRunFinished(
                    tenant=tenant,
                    run_id=run_id,
                    base_model=self.base_model,
                    dataset_version=version,
                    status="failed",
                    error=str(exc)[:2000],
                ),
            )
            raise

    def _job_dir(self, version: str) -> Path:
        params = self.settings.lora.model_dump_json() + f"{self.settings.p_oracle}"
        if self.settings.recipe != "sft":  # an sft job keeps the folder it had before recipes
            params += self.settings.recipe + self.settings.dpo.model_dump_json()
            params += f"{self.settings.min_pairs}"
        key = hashlib.sha256(params.encode()).hexdigest()[:8]
        return self.settings.state_dir / "jobs" / f"{version[:16]}-{key}"

    async def _prepare(self, snap: Any, job_dir: Path, tenant: str) -> tuple[Path, Path]:
        """Write the dataset snapshot and the RAFT files once per job folder (resume-safe)."""
        snapshot = job_dir / "dataset.jsonl"
        if not snapshot.exists():
            rows = [{**r, "split": "train"} for r in snap.train]
            rows += [{**r, "split": "holdout"} for r in snap.holdout]
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            snapshot.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
        examples = job_dir / "train.jsonl"
        if not examples.exists():
            sources = sources_from_rows(snap.train)
            built = await asyncio.to_thread(
                build_set,
                sources,
                self.distractors,
                k=self.settings.distractors,
                p_oracle=self.settings.p_oracle,
                seed=self.settings.lora.seed,
                tenant=tenant,
            )
            if self.settings.recipe != "sft":
                # Pairs share their SFT example's prompt; written first, so that a train.jsonl
                # on disk means both are there.
                pairs = build_pairs(built, sources, {p["example_id"]: p for p in snap.pairs})
                write_pairs(job_dir / "pairs.tmp.jsonl", pairs).rename(job_dir / "pairs.jsonl")
            write_examples(job_dir / "train.tmp.jsonl", built).rename(examples)
        return snapshot, examples

    def _train_config(self, examples: Path, job_dir: Path) -> TrainConfig:
        preference = self.settings.recipe != "sft"
        return TrainConfig(
            base_model_dir=self.base_model_dir,
            examples_path=examples,
            output_dir=job_dir,
            params=self.settings.lora,
            device=self.settings.device,
            recipe=self.settings.recipe,
            pairs_path=job_dir / "pairs.jsonl" if preference else None,
            dpo=self.settings.dpo,
            min_pairs=self.settings.min_pairs,
        )

    async def _preference_stage(
        self, run_id: str, version: str, job_dir: Path
    ) -> dict[str, Any] | None:
        """What the job's preference stage did (None for `sft`); records the pairs it trained."""
        if self.settings.recipe == "sft":
            return None
        stages = read_progress(job_dir / STAGES_FILE)
        if stages is None:
            return {"recipe": self.settings.recipe, "dpo": {"state": "unknown"}}
        dpo = stages.get("dpo") or {}
        log.info(
            "preference stage", extra={"run_id": run_id, **{f"dpo_{k}": v for k, v in dpo.items()}}
        )
        if dpo.get("state") == "done":
            pairs_file = job_dir / "pairs.jsonl"
            text = await asyncio.to_thread(pairs_file.read_text)
            ids = [json.loads(line)["example_id"] for line in text.splitlines() if line.strip()]
            await asyncio.to_thread(self.store.record_pair_training, run_id, version, ids)
        return stages

    async def _train_and_gate(
        self, run_id: str, tenant: str, version: str, snap: Any, job_dir: Path
    ) -> dict[str, Any]:
        _, examples = await self._prepare(snap, job_dir, tenant)
        adapter_dir = job_dir / ADAPTER_DIR
        if not (adapter_dir / "adapter_model.safetensors").exists():
            config = self._train_config(examples, job_dir)
            (job_dir / "train_config.json").write_text(config.model_dump_json(indent=2))
            await run_job(
                "raftloop_trainer.train", job_dir / "train_config.json", job_dir / "train.log"
            )
        card = AdapterCard(
            base_model=self.base_model,
            dataset_version=version,
            run_id=run_id,
            tenant=tenant,
            parent=self.registry.serving(self.settings.alias, tenant).adapter_id,
            hyperparameters=_flat_params(self.settings),
        )
        adapter_id = await asyncio.to_thread(self.registry.add, adapter_dir, card)
        preference = await self._preference_stage(run_id, version, job_dir)
        return await self._gate(run_id, tenant, version, snap, adapter_id, preference)

    async def eval_items(self, snap: Any, tenant: str) -> tuple[list[EvalItem], dict[str, Any]]:
        """The hold-out items (oracle always shown) and the tenant's own regression items.

        Also returns the report's `regression` summary: how many were checked, or why none.
        """
        held_sources = sources_from_rows(snap.holdout)
        held = await asyncio.to_thread(
            build_set,
            held_sources,
            self.distractors,
            k=self.settings.distractors,
            p_oracle=1.0,
            seed=self.settings.lora.seed + 1,
            tenant=tenant,
        )
        questions = {s.example_id: s.question for s in held_sources}
        stored = await asyncio.to_thread(self.store.regression_items, tenant)
        limit = self.settings.regression_items
        summary = regression_summary(len(stored), limit)
        return holdout_items(held, questions) + regression_set(stored, limit), summary

    def _lineup(self, tenant: str, adapter_id: str) -> Lineup:
        """Serving vs candidate, plus the base model when an adapter serves (`eval_base`)."""
        serving = self.registry.serving(self.settings.alias, tenant).adapter_id
        baseline = Variant(
            name=f"adapter:{serving[:12]}" if serving else "base",
            adapter_dir=self.registry.get(serving) if serving else None,
        )
        candidate = Variant(
            name=f"adapter:{adapter_id[:12]}", adapter_dir=self.registry.get(adapter_id)
        )
        if not serving:
            return Lineup(baseline, candidate, [("base = serving", baseline.name)])
        if not self.settings.eval_base:
            return Lineup(baseline, candidate, [("serving", baseline.name)])
        base = Variant(name="base")
        return Lineup(baseline, candidate, [("base", base.name), ("serving", baseline.name)], base)

    async def _evaluate(
        self, run_dir: Path, items: list[EvalItem], lineup: Lineup
    ) -> tuple[dict[str, Any], str | None]:
        """Run the eval job; its `scores.json`, and why the win rate is not measured (if not)."""
        judge, not_judged = self.settings.judge_config()
        baseline, candidate = lineup.baseline, lineup.candidate
        config = EvalConfig(
            base_model_dir=self.base_model_dir,
            items=items,
            variants=[baseline, candidate, *([lineup.base] if lineup.base else [])],
            output_dir=run_dir,
            max_new_tokens=self.settings.eval_max_new_tokens,
            device=self.settings.device,
            judge=judge,
            judge_pair=(baseline.name, candidate.name) if judge else None,
        )
        write_json_atomic(run_dir / "eval_config.json", json.loads(config.model_dump_json()))
        self.current = (self.current or {}) | {"phase": "evaluating"}
        key = {JUDGE_KEY_ENV: self.judge_api_key} if judge and self.judge_api_key else None
        await run_job(
            "raftloop_trainer.evaluate", run_dir / "eval_config.json", run_dir / "eval.log", env=key
        )
        return json.loads((run_dir / SCORES_FILE).read_text()), not_judged

    async def _gate(
        self,
        run_id: str,
        tenant: str,
        version: str,
        snap: Any,
        adapter_id: str,
        preference: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        run_dir = self.settings.state_dir / "runs" / run_id
        lineup = self._lineup(tenant, adapter_id)
        baseline, candidate = lineup.baseline.name, lineup.candidate.name
        items, regression = await self.eval_items(snap, tenant)
        result, not_judged = await self._evaluate(run_dir, items, lineup)
        diffs = compare(result, baseline, candidate)
        pairwise = pairwise_summary(result, not_measured=not_judged)
        decision = decide(
            diffs.get("holdout", []),
            diffs.get("regression", []),
            self.settings.gate_policy(),
            judge_win_rate=pairwise.get("win_rate"),
        )
        errors = error_analysis(result, [*lineup.columns, ("candidate", candidate)])
        metrics = flat_metrics(diffs) | pairwise_metrics(pairwise)
        payload = report_payload(
            title=f"{run_id}: {candidate} vs {baseline}",
            baseline=baseline,
            candidate=candidate,
            diffs=diffs,
            decision=decision,
            pairwise=pairwise,
            extra={
                "run_id": run_id,
                "dataset_version": version,
                "adapter_id": adapter_id,
                "data": data_summary(snap.train, snap.holdout),
                "regression": regression,
                "error_analysis": errors,
                **({"preference": preference} if preference is not None else {}),
            },
        )
        report = write_report(run_dir, payload)
        common: dict[str, Any] = {
            "alias": self.settings.alias,
            "base_model": self.base_model,
            "tenant": tenant,
            "run_id": run_id,
            "dataset_version": version,
            "metrics": metrics,
        }
        finished = metrics | error_counts(errors, "candidate")  # the ops timeline shows these
        finished |= preference_metrics(preference)
        await self._announce(common, snap, adapter_id, decision, report, finished)
        return {
            "run_id": run_id,
            "status": "promoted" if decision.promote else "rejected",
            "adapter_id": adapter_id,
            "report": payload,
        }

    async def _announce(
        self,
        common: dict[str, Any],
        snap: Any,
        adapter_id: str,
        decision: GateDecision,
        report: Path,
        run_metrics: dict[str, float],
    ) -> None:
        """Publish the finished run, promote or reject the candidate, and record the outcome.

        `run_metrics` (the gate's metrics and the candidate's error counts) go with the finished
        run; the promotion or rejection carries the gate's metrics only.
        """
        run_id = common["run_id"]
        await self.sink.publish(
            Topic.TRAINING_RUN_FINISHED,
            TrainingRunFinished(
                tenant=common["tenant"],
                run_id=run_id,
                base_model=self.base_model,
                dataset_version=common["dataset_version"],
                status="succeeded",
                adapter_id=adapter_id,
                train_examples=len(snap.train),
                holdout_examples=len(snap.holdout),
                metrics=run_metrics,
                report_path=str(report),
            ),
        )
        if decision.promote:
            await promotion.promote(
                self.registry, self.sink, adapter_id, reason="; ".join(decision.reasons), **common
            )
        else:
            await promotion.reject(self.sink, adapter_id, reasons=decision.reasons, **common)
        status = "promoted" if decision.promote else "rejected"
        self.store.finish_run(
            run_id,
            status,
            adapter_id=adapter_id,
            report_path=str(report),
            decision=json.dumps({"promote": decision.promote, "reasons": decision.reasons}),
        )
        log.info("training run finished", extra={"run_id": run_id, "status": status})


@dataclass(frozen=True)
class Lineup:
    """The variants of a run's evaluation and the error analysis's columns before the candidate.

    `base` is the base model, evaluated besides the serving adapter (None when the base model
    serves, or `TRAINER_EVAL_BASE` is off).
    """

    baseline: Variant
    candidate: Variant
    columns: list[tuple[str, str]]
    base: Variant | None = None


def _flat_params(settings: TrainerSettings) -> dict[str, float | int | str | bool]:
    params = settings.lora.model_dump()
    out: dict[str, float | int | str | bool] = {
        k: v for k, v in params.items() if isinstance(v, int | float | str | bool)
    }
    out["target_modules"] = ",".join(params["target_modules"])
    out["p_oracle"] = settings.p_oracle
    out["distractors"] = settings.distractors
    if settings.recipe != "sft":
        out["recipe"] = settings.recipe
        out |= {f"dpo_{k}": v for k, v in settings.dpo.model_dump().items()}
        out["min_pairs"] = settings.min_pairs
    return out
