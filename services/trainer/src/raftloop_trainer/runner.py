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
    recover_oracles,
    regression_set,
    sources_from_rows,
    write_examples,
)
from raftloop_trainer.domain import (
    CandidateVerdict,
    GateDecision,
    choice_reason,
    choose_candidate,
    dataset_version,
    decide,
)
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
from raftloop_trainer.hpo import HPO_FILE
from raftloop_trainer.metrics import PairedDiff
from raftloop_trainer.preference import build_pairs, write_pairs
from raftloop_trainer.progress import read_progress, write_json_atomic
from raftloop_trainer.raft import RaftSource
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
from raftloop_trainer.train import (
    ADAPTER_DIR,
    HPO_ADAPTER_DIR,
    PROGRESS_FILE,
    SFT_ADAPTER_DIR,
    STAGES_FILE,
    TrainConfig,
)

log = logging.getLogger(__name__)

ORACLES_FILE = "oracles.json"
"""How many training oracles the job's RAFT build recovered (kept for a resumed job's report)."""


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
        await asyncio.to_thread(
            self.store.update_run,
            run_id,
            dataset_version=version,
            train_examples=len(snap.train),
            holdout_examples=len(snap.holdout),
        )
        log.info("training run started", extra={"run_id": run_id, "dataset_version": version})
        try:
            return await self._train_and_gate(run_id, tenant, version, snap, job_dir)
        except Exception as exc:
            await asyncio.to_thread(self.store.finish_run, run_id, "failed", error=str(exc)[:4000])
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
        if self.settings.hpo.trials > 0:  # a searched job leaves another candidate
            params += self.settings.hpo.model_dump_json()
        key = hashlib.sha256(params.encode()).hexdigest()[:8]
        return self.settings.state_dir / "jobs" / f"{version[:16]}-{key}"

    async def _prepare(self, snap: Any, job_dir: Path, tenant: str) -> tuple[Path, Path]:
        """Write the dataset snapshot and the RAFT files once per job folder (resume-safe)."""
        snapshot = job_dir / "dataset.jsonl"
        if not snapshot.exists():
            await asyncio.to_thread(_write_snapshot, snapshot, snap)
        examples = job_dir / "train.jsonl"
        if not examples.exists():
            sources, recovered = await self._recover(sources_from_rows(snap.train), tenant)
            await asyncio.to_thread(
                write_json_atomic, job_dir / ORACLES_FILE, {"recovered": recovered}
            )
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

    async def _recover(
        self, sources: list[RaftSource], tenant: str
    ) -> tuple[list[RaftSource], int]:
        """`builder.recover_oracles` when `TRAINER_RECOVER_ORACLES` is on (rag is searched)."""
        if not self.settings.recover_oracles:
            return sources, 0
        return await asyncio.to_thread(
            recover_oracles,
            sources,
            self.distractors,
            tenant=tenant,
            min_recall=self.settings.recover_min_recall,
        )

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
            hpo=self.settings.hpo if self.settings.hpo.trials > 0 else None,
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
            await asyncio.to_thread(
                (job_dir / "train_config.json").write_text, config.model_dump_json(indent=2)
            )
            await run_job(
                "raftloop_trainer.train", job_dir / "train_config.json", job_dir / "train.log"
            )
        ctx = RunContext(run_id, tenant, version, snap, job_dir)
        preference = await self._preference_stage(run_id, version, job_dir)
        hpo = await asyncio.to_thread(read_progress, job_dir / HPO_FILE)
        candidates = await self._register(ctx, preference, hpo)
        return await self._gate(ctx, candidates, preference, hpo)

    async def _register(
        self, ctx: RunContext, preference: dict[str, Any] | None, hpo: dict[str, Any] | None
    ) -> list[Candidate]:
        """Add every candidate adapter of the job to the registry (`job_candidates`).

        Two candidates with the same weights (a skipped DPO stage keeps the SFT adapter) are
        one candidate.
        """
        parent = self.registry.serving(self.settings.alias, ctx.tenant).adapter_id
        found: list[Candidate] = []
        for label, folder in job_candidates(ctx.job_dir, self.settings.recipe, preference):
            params = _flat_params(self.settings) | {"candidate": label}
            if folder.name == HPO_ADAPTER_DIR and hpo and hpo.get("chosen"):
                params |= _tuned_params(hpo["chosen"])
            card = AdapterCard(
                base_model=self.base_model,
                dataset_version=ctx.version,
                run_id=ctx.run_id,
                tenant=ctx.tenant,
                parent=parent,
                hyperparameters=params,
            )
            adapter_id = await asyncio.to_thread(self.registry.add, folder, card)
            if all(c.adapter_id != adapter_id for c in found):
                variant = Variant(name=f"adapter:{adapter_id[:12]}", adapter_dir=folder)
                found.append(Candidate(label, adapter_id, variant))
        return found

    async def eval_items(
        self, snap: Any, tenant: str
    ) -> tuple[list[EvalItem], dict[str, Any], int]:
        """The hold-out items (oracle always shown) and the tenant's own regression items.

        Also returns the report's `regression` summary (how many were checked, or why none) and
        how many hold-out oracles were recovered (`builder.recover_oracles`).
        """
        held_sources, recovered = await self._recover(sources_from_rows(snap.holdout), tenant)
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
        return holdout_items(held, questions) + regression_set(stored, limit), summary, recovered

    def _lineup(self, tenant: str, candidates: list[Candidate]) -> Lineup:
        """Serving vs the candidates, plus the base model when an adapter serves (`eval_base`)."""
        serving = self.registry.serving(self.settings.alias, tenant).adapter_id
        baseline = Variant(
            name=f"adapter:{serving[:12]}" if serving else "base",
            adapter_dir=self.registry.get(serving) if serving else None,
        )
        if not serving:
            return Lineup(baseline, candidates, [("base = serving", baseline.name)])
        if not self.settings.eval_base:
            return Lineup(baseline, candidates, [("serving", baseline.name)])
        base = Variant(name="base")
        return Lineup(baseline, candidates, [("base", base.name), ("serving", baseline.name)], base)

    async def _evaluate(
        self, run_dir: Path, items: list[EvalItem], lineup: Lineup
    ) -> tuple[dict[str, Any], str | None]:
        """Run the eval job; its `scores.json`, and why the win rate is not measured (if not)."""
        judge, not_judged = self.settings.judge_config()
        baseline = lineup.baseline
        config = EvalConfig(
            base_model_dir=self.base_model_dir,
            items=items,
            variants=[baseline, *lineup.variants, *([lineup.base] if lineup.base else [])],
            output_dir=run_dir,
            max_new_tokens=self.settings.eval_max_new_tokens,
            device=self.settings.device,
            judge=judge,
            judge_pairs=[(baseline.name, v.name) for v in lineup.variants] if judge else [],
        )
        await asyncio.to_thread(
            write_json_atomic, run_dir / "eval_config.json", json.loads(config.model_dump_json())
        )
        self.current = (self.current or {}) | {"phase": "evaluating"}
        key = {JUDGE_KEY_ENV: self.judge_api_key} if judge and self.judge_api_key else None
        await run_job(
            "raftloop_trainer.evaluate", run_dir / "eval_config.json", run_dir / "eval.log", env=key
        )
        text = await asyncio.to_thread((run_dir / SCORES_FILE).read_text)
        return json.loads(text), not_judged

    def _judged(
        self, result: dict[str, Any], baseline: str, candidate: Candidate, not_judged: str | None
    ) -> Judged:
        """One candidate against what serves: its paired differences, win rate and verdict."""
        name = candidate.variant.name
        diffs = compare(result, baseline, name)
        pairwise = pairwise_summary(result, not_measured=not_judged, candidate=name)
        decision = decide(
            diffs.get("holdout", []),
            diffs.get("regression", []),
            self.settings.gate_policy(),
            judge_win_rate=pairwise.get("win_rate"),
        )
        primary = self.settings.primary_metric
        gain = next((d.diff for d in diffs.get("holdout", []) if d.metric == primary), 0.0)
        return Judged(candidate, diffs, pairwise, CandidateVerdict(candidate.label, gain, decision))

    async def _gate(
        self,
        ctx: RunContext,
        candidates: list[Candidate],
        preference: dict[str, Any] | None,
        hpo: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Evaluate every candidate, gate the one with the highest gain, report and announce."""
        run_dir = self.settings.state_dir / "runs" / ctx.run_id
        lineup = self._lineup(ctx.tenant, candidates)
        baseline = lineup.baseline.name
        items, regression, held_recovered = await self.eval_items(ctx.snap, ctx.tenant)
        result, not_judged = await self._evaluate(run_dir, items, lineup)
        judged = [self._judged(result, baseline, c, not_judged) for c in candidates]
        verdicts = [j.verdict for j in judged]
        chosen = judged[choose_candidate(verdicts)]
        decision = chosen.verdict.decision
        if len(judged) > 1:
            reason = choice_reason(verdicts, judged.index(chosen), self.settings.primary_metric)
            decision = GateDecision(decision.promote, [reason, *decision.reasons])
        candidate = chosen.candidate.variant.name
        errors = error_analysis(result, [*lineup.columns, *lineup.candidate_columns(chosen)])
        metrics = flat_metrics(chosen.diffs) | pairwise_metrics(chosen.pairwise)
        data = await _data(ctx, held_recovered)
        data = await _data(ctx, held_recovered)
        payload = report_payload(
            title=f"{ctx.run_id}: {candidate} vs {baseline}",
            baseline=baseline,
            candidate=candidate,
            diffs=chosen.diffs,
            decision=decision,
            pairwise=chosen.pairwise,
            extra={
                "run_id": ctx.run_id,
                "dataset_version": ctx.version,
                "adapter_id": chosen.candidate.adapter_id,
                "data": data,
                "regression": regression,
                "error_analysis": errors,
                **({"preference": preference} if preference is not None else {}),
                **({"candidates": candidate_rows(judged, chosen)} if len(judged) > 1 else {}),
                **({"hpo": hpo} if hpo is not None else {}),
            },
        )
        report = await asyncio.to_thread(write_report, run_dir, payload)
        finished = metrics | error_counts(errors, "candidate")  # the ops timeline shows these
        finished |= preference_metrics(preference)
        await self._announce(ctx, chosen.candidate.adapter_id, decision, report, metrics, finished)
        return {
            "run_id": ctx.run_id,
            "status": "promoted" if decision.promote else "rejected",
            "adapter_id": chosen.candidate.adapter_id,
            "report": payload,
        }

    async def _announce(
        self,
        ctx: RunContext,
        adapter_id: str,
        decision: GateDecision,
        report: Path,
        metrics: dict[str, float],
        run_metrics: dict[str, float],
    ) -> None:
        """Publish the finished run, promote or reject the candidate, and record the outcome.

        `run_metrics` (the gate's metrics and the candidate's error counts) go with the finished
        run; the promotion or rejection carries the gate's `metrics` only.
        """
        common: dict[str, Any] = {
            "alias": self.settings.alias,
            "base_model": self.base_model,
            "tenant": ctx.tenant,
            "run_id": ctx.run_id,
            "dataset_version": ctx.version,
            "metrics": metrics,
        }
        await self.sink.publish(
            Topic.TRAINING_RUN_FINISHED,
            TrainingRunFinished(
                tenant=ctx.tenant,
                run_id=ctx.run_id,
                base_model=self.base_model,
                dataset_version=ctx.version,
                status="succeeded",
                adapter_id=adapter_id,
                train_examples=len(ctx.snap.train),
                holdout_examples=len(ctx.snap.holdout),
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
        await asyncio.to_thread(
            self.store.finish_run,
            ctx.run_id,
            status,
            adapter_id=adapter_id,
            report_path=str(report),
            decision=json.dumps({"promote": decision.promote, "reasons": decision.reasons}),
        )
        log.info("training run finished", extra={"run_id": ctx.run_id, "status": status})


@dataclass(frozen=True)
class RunContext:
    """What every step of one run acts on: its id, tenant, dataset snapshot and job folder."""

    run_id: str
    tenant: str
    version: str
    snap: Any
    job_dir: Path


@dataclass(frozen=True)
class Candidate:
    """One adapter a run produced: which recipe made it, its registry id, its eval variant."""

    label: str
    adapter_id: str
    variant: Variant


@dataclass(frozen=True)
class Judged:
    """A candidate's evaluation against what serves, and the gate's verdict on it alone."""

    candidate: Candidate
    diffs: dict[str, list[PairedDiff]]
    pairwise: dict[str, Any]
    verdict: CandidateVerdict


@dataclass(frozen=True)
class Lineup:
    """The variants of a run's evaluation and the error analysis's columns before the candidates.

    `base` is the base model, evaluated besides the serving adapter (None when the base model
    serves, or `TRAINER_EVAL_BASE` is off).
    """

    baseline: Variant
    candidates: list[Candidate]
    columns: list[tuple[str, str]]
    base: Variant | None = None

    @property
    def variants(self) -> list[Variant]:
        """The candidates' eval variants, in order."""
        return [c.variant for c in self.candidates]

    def candidate_columns(self, chosen: Judged) -> list[tuple[str, str]]:
        """Error-analysis columns of the candidates: the chosen one is `candidate`."""
        return [
            ("candidate" if c == chosen.candidate else f"candidate ({c.label})", c.variant.name)
            for c in self.candidates
        ]


def job_candidates(
    job_dir: Path, recipe: str, preference: dict[str, Any] | None
) -> list[tuple[str, Path]]:
    """The adapters a training job left to compare: (label, folder), the recipe's own first.

    `sft+dpo` whose DPO stage ran also leaves its SFT stage's adapter, the SFT-only candidate;
    a hyper-parameter search that found better values leaves `hpo-adapter` (SFT, tuned).
    """
    found = [(recipe, job_dir / ADAPTER_DIR)]
    dpo_done = ((preference or {}).get("dpo") or {}).get("state") == "done"
    if recipe == "sft+dpo" and dpo_done and _has_adapter(job_dir / SFT_ADAPTER_DIR):
        found.append(("sft", job_dir / SFT_ADAPTER_DIR))
    if _has_adapter(job_dir / HPO_ADAPTER_DIR):
        found.append(("sft (tuned)", job_dir / HPO_ADAPTER_DIR))
    return found


def _write_snapshot(path: Path, snap: Any) -> None:
    """The run's examples as JSONL, each with its split."""
    rows = [{**r, "split": "train"} for r in snap.train]
    rows += [{**r, "split": "holdout"} for r in snap.holdout]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))


def _has_adapter(folder: Path) -> bool:
    return (folder / "adapter_model.safetensors").is_file()


def candidate_rows(judged: list[Judged], chosen: Judged) -> list[dict[str, Any]]:
    """The report's table of every candidate: hold-out figures, win rate and verdict."""
    rows = []
    for j in judged:
        holdout = {d.metric: d.as_dict() for d in j.diffs.get("holdout", [])}
        rows.append(
            {
                "label": j.candidate.label,
                "adapter_id": j.candidate.adapter_id,
                "variant": j.candidate.variant.name,
                "chosen": j is chosen,
                "holdout": holdout,
                "pairwise": j.pairwise,
                "passes": j.verdict.decision.promote,
                "reasons": j.verdict.decision.reasons,
            }
        )
    return rows


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


def _tuned_params(chosen: dict[str, Any]) -> dict[str, float | int | str | bool]:
    """The searched LoRA values of a tuned candidate's card (the search's `chosen`)."""
    return {k: v for k, v in chosen.items() if isinstance(v, int | float | str | bool)}


async def _data(ctx: RunContext, held_recovered: int) -> dict[str, Any]:
    """The report's `data`: the examples, those without an oracle, and the oracles recovered."""
    oracles = await asyncio.to_thread(read_progress, ctx.job_dir / ORACLES_FILE)
    return data_summary(ctx.snap.train, ctx.snap.holdout) | {
        "oracle_recovered_train": int((oracles or {}).get("recovered", 0)),
        "oracle_recovered_holdout": held_recovered,
    }
