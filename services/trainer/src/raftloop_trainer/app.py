"""`create_app`: wiring only. Everything with I/O comes in as an argument from `main.build`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry, Counter

from raftloop_core.api import KeyStore, install_error_handlers
from raftloop_core.events import (
    AdapterPromoted,
    AdapterRejected,
    Event,
    ExampleCurated,
    TrainingRunFinished,
)
from raftloop_core.faults import crash_point
from raftloop_core.limits import install_request_guards
from raftloop_core.messaging import consumer_options
from raftloop_core.service import ReadinessCheck, add_ops_routes, blocking_check, broker_check
from raftloop_core.telemetry import instrument_broker
from raftloop_core.topics import Topic
from raftloop_trainer.adapters import EventSink, RunInProgress
from raftloop_trainer.domain import BUSY, NotStarted, Started, due_reason
from raftloop_trainer.preference import pair_refusal
from raftloop_trainer.routes import build_router, regression_router
from raftloop_trainer.runner import NothingToTrain, Runner
from raftloop_trainer.settings import TrainerSettings

log = logging.getLogger(__name__)


class Scheduler:
    """Starts runs in the background: from the triggers, or on demand; one at a time."""

    def __init__(self, runner: Runner, settings: TrainerSettings) -> None:
        self.runner = runner
        self.settings = settings
        self.task: asyncio.Task[Any] | None = None
        self.wake = asyncio.Event()

    @property
    def busy(self) -> bool:
        """Whether a run is in progress in this process."""
        return self.task is not None and not self.task.done()

    def start_run(self, tenant: str, trigger: str) -> bool:
        """Launch a run unless one is going; return whether it was launched."""
        if self.busy:
            return False
        self.task = asyncio.create_task(self._run(tenant, trigger), name="training-run")
        return True

    async def run_now(self, tenant: str, trigger: str) -> Started | NotStarted:
        """Launch a run on demand and wait until it has begun, or say why it did not.

        The runner refuses within moments (the run lock, then the dataset snapshot), so the
        caller learns the outcome instead of a launch that may have done nothing.
        """
        if not self.start_run(tenant, trigger):
            return NotStarted("run_in_progress", BUSY)
        task = self.task
        assert task is not None
        # The runner has no start signal to await: `current` is set once its lock and snapshot
        # are taken (milliseconds), and a refusal ends the task before that.
        while not task.done() and self.runner.current is None:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        current = self.runner.current
        if current is not None:
            return Started(str(current["run_id"]))
        ended = task.result()
        if isinstance(ended, NothingToTrain):
            return NotStarted("nothing_to_train", str(ended))
        if isinstance(ended, RunInProgress):
            return NotStarted("run_in_progress", str(ended))
        if ended is not None:
            raise RuntimeError("the training run failed as it began") from ended
        return Started(None)  # it began and already ended: the runs list has it

    async def _run(self, tenant: str, trigger: str) -> Exception | None:
        """Run; return why it did not start or failed (both are logged), None when it ran."""
        try:
            await self.runner.run(tenant, trigger)
        except (RunInProgress, NothingToTrain) as exc:
            log.info("training run not started", extra={"reason": str(exc)})
            return exc
        except Exception as exc:
            log.exception("training run failed", extra={"tenant": tenant})
            return exc
        return None

    async def watch(self) -> None:
        """Check the triggers when examples arrive and every `trigger_poll_s`."""
        policy = self.settings.trigger_policy()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.trigger_poll_s)
            self.wake.clear()
            if self.busy or not self.settings.auto_train:
                continue
            pending = await asyncio.to_thread(self.runner.store.pending)
            for data in pending:
                if data.base_model != self.runner.base_model:
                    continue
                reason = due_reason(data, policy, datetime.now(UTC))
                if reason and self.start_run(data.tenant, f"trigger: {reason}"):
                    break


def _subscribe(
    broker: KafkaBroker, settings: TrainerSettings, scheduler: Scheduler, metrics: CollectorRegistry
) -> None:
    received = Counter(
        "raftloop_trainer_examples_total",
        "Curated examples consumed, by outcome.",
        ["outcome"],
        registry=metrics,
    )
    pairs = Counter(
        "raftloop_trainer_pairs_total",
        "Preference pairs of corrected examples, stored or refused (equal answers).",
        ["outcome"],
        registry=metrics,
    )

    subscriber = broker.subscriber(
        Topic.EXAMPLE_CURATED, **consumer_options(settings.kafka, group_id="trainer")
    )

    @subscriber  # type: ignore[untyped-decorator]
    async def on_example_curated(event: ExampleCurated) -> None:
        """dataset.example.curated -> the dataset (idempotent on example id and content)."""
        outcome = await asyncio.to_thread(scheduler.runner.store.add, event)
        received.labels(outcome).inc()
        if outcome == "added" and event.rejected_answer is not None:
            refused = pair_refusal(event.source, event.answer, event.rejected_answer)
            pairs.labels("refused" if refused else "stored").inc()
        log.info(
            "curated example received",
            extra={
                "interaction_id": str(event.interaction_id),
                "example_id": str(event.example_id),
                "tenant": event.tenant,
                "source": event.source,
                "outcome": outcome,
            },
        )
        crash_point("trainer.after_write")  # fault tests: written, offset not yet committed
        scheduler.wake.set()


class CountingSink:
    """An `EventSink` that counts training runs and gate decisions on their way out."""

    def __init__(self, inner: EventSink, metrics: CollectorRegistry) -> None:
        self.inner = inner
        self.runs = Counter(
            "raftloop_trainer_runs_total",
            "Training runs finished, by status.",
            ["status"],
            registry=metrics,
        )
        self.decisions = Counter(
            "raftloop_trainer_gate_decisions_total",
            "Evaluation gate decisions on candidate adapters (manual promotions not included).",
            ["decision"],
            registry=metrics,
        )
        for status in ("succeeded", "failed"):
            self.runs.labels(status)
        for decision in ("promoted", "rejected"):
            self.decisions.labels(decision)

    async def publish(self, topic: Topic, event: Event) -> None:
        """Publish through the wrapped sink, then count what was published."""
        await self.inner.publish(topic, event)
        if isinstance(event, TrainingRunFinished):
            self.runs.labels(event.status).inc()
        elif isinstance(event, AdapterPromoted) and event.run_id is not None:
            self.decisions.labels("promoted").inc()
        elif isinstance(event, AdapterRejected):
            self.decisions.labels("rejected").inc()


def create_app(
    settings: TrainerSettings, *, keys: KeyStore, runner: Runner, broker: KafkaBroker
) -> FastAPI:
    """The trainer's HTTP app: admin routes, ops routes, the example consumer, the triggers."""
    scheduler = Scheduler(runner, settings)
    metrics = CollectorRegistry()
    instrument_broker(broker, metrics, service="trainer")
    runner.sink = CountingSink(runner.sink, metrics)
    _subscribe(broker, settings, scheduler, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:  # noqa: ARG001  # FastAPI's signature
        interrupted = await asyncio.to_thread(runner.store.interrupt_running)
        if interrupted:
            log.warning("runs interrupted by a restart will resume", extra={"runs": interrupted})
        await broker.start()
        scheduler.wake.set()  # check the triggers at once: an interrupted run resumes
        watcher = asyncio.create_task(scheduler.watch(), name="trigger-watch")
        try:
            yield
        finally:
            watcher.cancel()
            if scheduler.task is not None:
                scheduler.task.cancel()
            for task in (watcher, scheduler.task):
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            await broker.stop()

    app = FastAPI(title="raftloop trainer", version="0.1.0", lifespan=lifespan)
    app.state.scheduler = scheduler
    app.state.keys = keys  # the routes of `regression_router` check callers against it
    install_error_handlers(app)
    install_request_guards(app, settings.request_limits())
    add_ops_routes(
        app,
        service="trainer",
        registry=metrics,
        checks=[
            broker_check(broker),
            blocking_check("database", lambda: runner.store.runs(1)),
            ReadinessCheck("model", _model_present(runner)),
        ],
        keys=keys,
        protect=settings.runtime.ops_protected,
    )
    app.include_router(build_router(settings, keys=keys, scheduler=scheduler))
    app.include_router(regression_router)
    return app


def _model_present(runner: Runner) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        # Training loads the base model in a job process; the service needs its files.
        return (runner.base_model_dir / "config.json").is_file()

    return check
