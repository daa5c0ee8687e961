"""The trainer's run and gate-decision counters, counted as its events go out."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from raftloop_core import events as ev
from raftloop_core.testing import sample_events
from raftloop_core.topics import Topic
from raftloop_trainer.app import CountingSink


class Recorded(list[tuple[Topic, ev.Event]]):
    async def publish(self, topic: Topic, event: ev.Event) -> None:
        self.append((topic, event))


async def test_runs_and_gate_decisions_are_counted_once_published() -> None:
    registry = CollectorRegistry()
    inner = Recorded()
    sink = CountingSink(inner, registry)
    samples = sample_events()
    finished = samples[Topic.TRAINING_RUN_FINISHED]
    assert isinstance(finished, ev.TrainingRunFinished)
    promoted = samples[Topic.ADAPTER_PROMOTED]
    assert isinstance(promoted, ev.AdapterPromoted)
    published = [
        (Topic.TRAINING_RUN_FINISHED, finished),
        (Topic.TRAINING_RUN_FINISHED, finished.model_copy(update={"status": "failed"})),
        (Topic.ADAPTER_PROMOTED, promoted),  # the gate's (it names its run)
        (Topic.ADAPTER_PROMOTED, promoted.model_copy(update={"run_id": None})),  # manual
        (Topic.ADAPTER_REJECTED, samples[Topic.ADAPTER_REJECTED]),
        (Topic.ADAPTER_ROLLED_BACK, samples[Topic.ADAPTER_ROLLED_BACK]),
    ]
    for topic, event in published:
        await sink.publish(topic, event)

    assert inner == published

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("raftloop_trainer_runs_total", status="succeeded") == 1
    assert value("raftloop_trainer_runs_total", status="failed") == 1
    assert value("raftloop_trainer_gate_decisions_total", decision="promoted") == 1
    assert value("raftloop_trainer_gate_decisions_total", decision="rejected") == 1


async def test_counters_start_at_zero_so_dashboards_and_alerts_see_them() -> None:
    registry = CollectorRegistry()
    CountingSink(Recorded(), registry)
    for status in ("succeeded", "failed"):
        assert registry.get_sample_value("raftloop_trainer_runs_total", {"status": status}) == 0
    for decision in ("promoted", "rejected"):
        labels = {"decision": decision}
        assert registry.get_sample_value("raftloop_trainer_gate_decisions_total", labels) == 0
