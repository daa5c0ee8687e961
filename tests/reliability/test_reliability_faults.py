"""Kill -9 of every consumer service under a steady flow: nothing lost, nothing counted twice.

Chat requests flow through the gateway (half streamed) while ingest, judge and hitl are killed
with SIGKILL at random points, RELIABILITY_KILLS times each, and restarted. Then the checker
compares the interaction ids the gateway acknowledged with what every stage holds.
"""

from __future__ import annotations

import os
import random
import time
import uuid

import pytest
from fleet import Fleet
from loop_support import AfterWrite, Traffic, stages, wait_until_queued
from reliability_tools import Section, check_stages, knobs, record, totals

# Each restart takes up to ~2 minutes on a busy 2-core machine; the long form needs far more
# than pytest's default 600 s.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(900 + 3 * 120 * int(knobs()["RELIABILITY_KILLS"])),
]
CONSUMERS = ("ingest", "judge", "hitl")
COMMAND = "make reliability  # or: pytest tests/reliability/test_reliability_faults.py"


def test_kill9_of_every_consumer_loses_and_duplicates_nothing(fleet: Fleet) -> None:
    kills = int(knobs()["RELIABILITY_KILLS"])
    seed = int(os.environ.get("RELIABILITY_SEED", "11"))
    rng = random.Random(seed)
    marker = f"fault-{uuid.uuid4().hex[:8]}"
    schedule = [name for name in CONSUMERS for _ in range(kills)]
    rng.shuffle(schedule)
    traffic = Traffic(fleet, marker)
    after_write = AfterWrite(fleet)
    targeted = 0
    started = time.monotonic()
    traffic.start()
    try:
        for n, name in enumerate(schedule):
            if n % 2:  # every other kill: right after a write, before the offset commit
                targeted += after_write.wait(name)
            else:
                time.sleep(rng.uniform(0.2, 3.0))  # a random point in the flow
            fleet.services[name].kill9()
            fleet.restart(name)
        time.sleep(2)
    finally:
        traffic.stop()
    flow_s = time.monotonic() - started
    acked = set(traffic.acked)
    drain_s = wait_until_queued(fleet, marker, acked, timeout_s=300)
    rows = check_stages(acked, stages(fleet, marker))
    sums = totals(rows)
    logs = fleet.logs()
    deduped = {  # redelivered messages each service recognised and skipped
        "ingest": logs["ingest"].count('"duplicate chat event skipped"'),
        "hitl": logs["hitl"].count('"outcome": "duplicate"'),
    }

    record(
        Section(
            "10-faults",
            "Fault injection: kill -9 of ingest, judge and hitl under a steady flow",
            COMMAND,
            {
                "kills per service": kills,
                "kills in all": len(schedule),
                "kills within ~20 ms of a write": targeted,
                "seed": seed,
                "requests sent": traffic.sent,
                "acknowledged by the gateway": len(acked),
                "gateway errors": len(traffic.errors),
                "flow seconds": round(flow_s),
                "drain seconds after the flow": round(drain_s),
                "lost": sums["lost"],
                "duplicated after dedupe": sums["duplicated"],
                "stuck": sums["stuck"],
                "redeliveries skipped by ingest (its log)": deduped["ingest"],
                "redeliveries skipped by hitl (its log)": deduped["hitl"],
            },
            tables=[
                (
                    ["stage", "expected", "held", "lost", "stuck", "duplicated", "redelivered"],
                    [
                        [
                            r.stage,
                            *map(
                                str,
                                (r.expected, r.held, r.lost, r.stuck, r.duplicated, r.redelivered),
                            ),
                        ]
                        for r in rows
                    ],
                )
            ],
            notes=[
                "Dedupe keys: event id on chat.completed and interaction.ingested (ingest derives "
                "its event ids from the source event), interaction id + revision on "
                "interaction.judged (what hitl applies), one row per interaction in hitl's "
                "items table. *redelivered* copies are at-least-once redeliveries that the "
                "consumers drop.",
                "Every other kill waits for the service to apply a message (ingest and hitl: the "
                "log line written after their database transaction; judge: a new record on "
                "interaction.judged) and kills at once; the others land at random points of the "
                "flow. The services' logs count the redelivered messages they recognised and "
                "skipped: where that is 0, every kill landed after the offset commit too, so "
                "the write-to-commit window itself was not hit in this run (it would show as "
                "skipped redeliveries, never as duplicates: ingest re-publishes the same event "
                "id, hitl's inbox and the judge's processed table drop repeats).",
            ],
        )
    )
    assert acked, traffic.errors[:5]
    assert not traffic.errors, traffic.errors[:5]  # the gateway itself is never killed here
    assert sums == {"lost": 0, "stuck": 0, "duplicated": 0}, rows
