"""Kill -9 of every consumer service under a steady flow: nothing lost, nothing counted twice.

Chat requests flow through the gateway (half streamed) and a reviewer approves the queued items
through the hitl API while ingest, judge, hitl and the trainer are killed with SIGKILL,
RELIABILITY_KILLS times each, and restarted. Every other kill of each service is a failpoint
(`raftloop_core.faults`): the service kills itself right after its database write and before
the broker offset commit, the window that at-least-once delivery must redo without duplicates.
The others land at random points of the flow. Then the checker compares the interaction ids
the gateway acknowledged (and the reviews hitl acknowledged) with what every stage holds.

The CI form kills each service once, at its failpoint: that window is what only this test
covers, while each service's own crash test (ingest, judge, hitl, the trainer) kills it at
random points. A second round of restarts cost CI about a minute. The long form alternates.
"""

from __future__ import annotations

import os
import random
import time
import uuid

import pytest
from fleet import Fleet
from loop_support import (
    Reviewer,
    Traffic,
    one_review_per_item,
    review_stages,
    stages,
    wait_until_curated,
    wait_until_queued,
)
from reliability_tools import Section, StageFigures, check_stages, knobs, record, totals

# Each restart takes up to ~2 minutes on a busy 2-core machine; the long form needs far more
# than pytest's default 600 s.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(900 + 4 * 180 * int(knobs()["RELIABILITY_KILLS"])),
]
CONSUMERS = ("ingest", "judge", "hitl", "trainer")
COMMAND = "make reliability  # or: pytest tests/reliability/test_reliability_faults.py"
# What each service logs when it recognises a redelivered message and skips it.
REDELIVERY_LINES = {
    "ingest": '"duplicate chat event skipped"',
    "hitl": '"outcome": "duplicate"',
    "trainer": '"outcome": "redelivered"',
    "judge": '"redelivered ingested event skipped"',
}


def _table(rows: list[StageFigures]) -> list[list[str]]:
    return [
        [
            r.stage,
            *map(str, (r.expected, r.held, r.lost, r.stuck, r.duplicated, r.redelivered)),
        ]
        for r in rows
    ]


def test_kill9_of_every_consumer_loses_and_duplicates_nothing(fleet: Fleet) -> None:
    with one_review_per_item(fleet):
        flow(fleet)


def flow(fleet: Fleet) -> None:
    """Traffic and reviews under the kill schedule, then the checker and the figures."""
    kills = int(knobs()["RELIABILITY_KILLS"])
    seed = int(os.environ.get("RELIABILITY_SEED", "11"))
    rng = random.Random(seed)
    marker = f"fault-{uuid.uuid4().hex[:8]}"
    schedule = [name for name in CONSUMERS for _ in range(kills)]
    rng.shuffle(schedule)
    traffic = Traffic(fleet, marker)
    reviewer = Reviewer(fleet, marker)
    at_failpoint = dict.fromkeys(CONSUMERS, 0)
    started = time.monotonic()
    traffic.start()
    reviewer.start()
    try:
        done = dict.fromkeys(CONSUMERS, 0)
        for name in schedule:
            service = fleet.services[name]
            done[name] += 1
            if done[name] % 2:  # each service's 1st, 3rd, ... kill: after a write, pre-commit
                at_failpoint[name] += service.crash_at(
                    f"{name}.after_write", fleet.failpoints, timeout_s=120
                )
            else:
                time.sleep(rng.uniform(0.2, 3.0))  # a random point in the flow
                service.kill9()
            fleet.restart(name)
        time.sleep(2)
    finally:
        traffic.stop()
    flow_s = time.monotonic() - started
    acked = set(traffic.acked)
    drain_s = wait_until_queued(fleet, marker, acked, timeout_s=300)
    time.sleep(5)  # the reviewer finishes the queue of this run
    reviewer.stop()
    reviewed = set(reviewer.reviewed)
    drain_s += wait_until_curated(fleet, marker, reviewed, timeout_s=300)
    rows = check_stages(acked, stages(fleet, marker))
    review_rows = check_stages(reviewed, review_stages(fleet, marker, reviewed))
    sums = totals(rows + review_rows)
    logs = fleet.logs()
    skipped = {name: logs[name].count(line) for name, line in REDELIVERY_LINES.items()}

    record(
        Section(
            "10-faults",
            "Fault injection: kill -9 of ingest, judge, hitl and the trainer under a steady flow",
            COMMAND,
            {
                "kills per service": kills,
                "kills in all": len(schedule),
                "kills at a failpoint (after the DB write, before the offset commit)": sum(
                    at_failpoint.values()
                ),
                **{f"  of which {name}": count for name, count in at_failpoint.items()},
                "seed": seed,
                "requests sent": traffic.sent,
                "acknowledged by the gateway": len(acked),
                "gateway errors": len(traffic.errors),
                "reviews acknowledged by hitl": len(reviewed),
                "review attempts cut off by a kill (retried)": reviewer.errors,
                "flow seconds": round(flow_s),
                "drain seconds after the flow": round(drain_s),
                "lost": sums["lost"],
                "duplicated after dedupe": sums["duplicated"],
                "stuck": sums["stuck"],
                **{f"redeliveries skipped by {n} (its log)": c for n, c in skipped.items()},
            },
            tables=[
                (
                    ["stage", "expected", "held", "lost", "stuck", "duplicated", "redelivered"],
                    _table(rows) + _table(review_rows),
                )
            ],
            notes=[
                "Dedupe keys: event id on chat.completed, interaction.ingested, "
                "review.completed and dataset.example.curated (ingest derives its event ids "
                "from the source event; hitl's outbox relays each event under a fixed id), "
                "interaction id + revision on interaction.judged (what hitl applies), one row "
                "per interaction in hitl's items table, example id in the trainer's dataset. "
                "*redelivered* copies are at-least-once redeliveries that the consumers drop.",
                "The review stages expect the interactions whose review the hitl API "
                "acknowledged; a review cut off by a kill is claimed again and retried.",
                "Every other kill of each service (its first, third, ...) is a failpoint: the "
                "service kills itself with SIGKILL right after its database transaction and "
                "before the offset commit, so the broker "
                "redelivers what it had already applied. The services' logs count the "
                "redelivered messages they recognised and skipped.",
            ],
        )
    )
    assert acked, traffic.errors[:5]
    assert not traffic.errors, traffic.errors[:5]  # the gateway itself is never killed here
    assert reviewed, f"no review was acknowledged ({reviewer.errors} errors)"
    assert sums == {"lost": 0, "stuck": 0, "duplicated": 0}, rows + review_rows
    assert sum(at_failpoint.values()) >= (len(schedule) + 1) // 2 - 1, at_failpoint
