"""One training run, then exit: the entry point of the trainer's Kubernetes GPU Job.

The trainer service (a Deployment) keeps the dataset current and serves the admin API; the
GPU work is scheduled separately so a GPU is held only while a run trains. This script builds
the same `Runner` as the service (`raftloop_trainer.main.build_runner`), runs snapshot -> RAFT
build -> LoRA training -> evaluation -> gate -> promotion once for one tenant, and exits.

    python /opt/raftloop/trainer_run_once.py --tenant default

Exit codes: 0 when the run finished (promoted or rejected by the gate) or when there was
nothing to do (no examples yet, or another run holds the lock), 1 when the run failed, 2 when
the settings are wrong. Settings are the trainer's own (`TRAINER_*`, `KAFKA_*`, `DATABASE_URL`,
`RAFTLOOP_*`).
"""

# ruff: noqa: T201  (a command-line entry point: what it prints is its report)
from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiokafka.errors import KafkaError

from raftloop_core.logs import configure_logging
from raftloop_core.messaging import make_broker
from raftloop_core.settings import SettingsError
from raftloop_trainer.adapters import KafkaEventSink, RunInProgress
from raftloop_trainer.settings import TrainerSettings

BROKER_TIMEOUT_S = 30.0


async def run_once(settings: TrainerSettings, tenant: str, trigger: str) -> int:
    """Run one training run for `tenant` and report it on stdout; return the exit code."""
    broker = make_broker(settings.kafka, client_id="raftloop-trainer-job")
    try:
        await asyncio.wait_for(broker.start(), timeout=BROKER_TIMEOUT_S)
    except (TimeoutError, KafkaError, OSError) as exc:
        await broker.stop()
        print(
            f"trainer job: no broker at {settings.kafka.bootstrap_servers} "
            f"({type(exc).__name__}); check KAFKA_BOOTSTRAP_SERVERS",
            file=sys.stderr,
        )
        return 1
    # The runner pulls in the model stack: imported only once the broker answered.
    from raftloop_trainer.main import build_runner
    from raftloop_trainer.runner import NothingToTrain

    try:
        runner = build_runner(settings, KafkaEventSink(broker))
        result = await runner.run(tenant, trigger)
    except (NothingToTrain, RunInProgress) as exc:
        print(f"trainer job: nothing to do: {exc}")
        return 0
    finally:
        await broker.stop()
    print(json.dumps(result, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run once, return the exit code."""
    parser = argparse.ArgumentParser(description="Run one RAFT LoRA training run and exit.")
    parser.add_argument("--tenant", default="default", help="Tenant whose dataset trains.")
    parser.add_argument("--trigger", default="kubernetes job", help="Recorded with the run.")
    args = parser.parse_args(argv)
    try:
        settings = TrainerSettings()
    except (SettingsError, ValueError) as exc:
        print(f"trainer job: {exc}", file=sys.stderr)
        return 2
    runtime = settings.runtime
    configure_logging("trainer-job", level=runtime.log_level, fmt=runtime.log_format)
    try:
        return asyncio.run(run_once(settings, args.tenant, args.trigger))
    except SettingsError as exc:
        print(f"trainer job: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
