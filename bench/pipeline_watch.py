"""Watching the pipeline: every consumer group's committed offsets and lag, once a second.

Lag is `raftloop_core.ops.group_status`'s: committed offsets against end offsets read from a
fetch's high-water mark (the embedded broker's ListOffsets is wrong after batched writes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from kafka.errors import KafkaError

from bench.pipeline_stack import Stack
from raftloop_core.ops import group_status
from raftloop_core.topics import Topic

ADDED = "raftloop_trainer_examples_total{outcome=added}"
STAGES = {  # stage -> (consumer group, its input topic)
    "ingest": ("ingest", Topic.CHAT_COMPLETED),
    "judge": ("judge", Topic.INTERACTION_INGESTED),
    "hitl": ("hitl", Topic.INTERACTION_JUDGED),
    "trainer": ("trainer", Topic.EXAMPLE_CURATED),
}


@dataclass(frozen=True)
class Sample:
    """Every group's committed offsets and lag, and the trainer's count, at one moment."""

    t: float
    processed: dict[str, int]
    lag: dict[str, int]
    added: int


class Sampler:
    """Reads `group_status` and the trainer's counter about once a second, in a thread."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.samples: list[Sample] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> Sampler:
        """Start sampling; the first sample is taken before this returns."""
        self.samples.append(self.take())
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(30)

    def take(self) -> Sample:
        """One sample, now."""
        groups = {g.group_id: g for g in group_status(self.stack.kafka)}
        processed = {
            stage: sum(p.committed or 0 for p in groups[g].partitions if p.topic == topic)
            if g in groups
            else 0
            for stage, (g, topic) in STAGES.items()
        }
        lag = {g.group_id: g.lag for g in groups.values()}
        added = int(self.stack.metrics("trainer").get(ADDED, 0))
        return Sample(time.monotonic(), processed, lag, added)

    @property
    def last(self) -> Sample:
        """The latest sample."""
        return self.samples[-1]

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.samples.append(self.take())
            except (KafkaError, OSError, httpx.HTTPError):
                self.failures += 1  # a group mid-rebalance or a busy service: next second

    def wait(self, what: str, predicate: Callable[[Sample], bool], timeout_s: float) -> float:
        """The time (`time.monotonic()`) of the first sample from now on that satisfies `predicate`.

        Raises:
            TimeoutError: none within `timeout_s`; the message has the latest sample.
        """
        start, seen = time.monotonic(), len(self.samples)
        while time.monotonic() - start < timeout_s:
            for sample in self.samples[seen:]:
                if predicate(sample):
                    return sample.t
            seen = len(self.samples)
            time.sleep(0.2)
        raise TimeoutError(f"{what}: not within {timeout_s:.0f} s; last sample {self.last}")

    def capacities(self, backlog: int = 20) -> dict[str, float]:
        """Per stage: processed/s over the intervals its group had a backlog at both ends."""
        out: dict[str, float] = {}
        for stage, (group, _) in STAGES.items():
            done = seconds = 0.0
            for a, b in zip(self.samples, self.samples[1:], strict=False):
                if min(a.lag.get(group, 0), b.lag.get(group, 0)) >= backlog:
                    done += b.processed[stage] - a.processed[stage]
                    seconds += b.t - a.t
            if seconds >= 2:
                out[stage] = round(done / seconds, 1)
        return out
