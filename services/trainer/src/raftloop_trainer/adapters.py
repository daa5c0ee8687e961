"""I/O of the trainer: event publishing, the one-run lock, job processes."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Protocol

from faststream.kafka import KafkaBroker

from raftloop_core.events import Event, event_key
from raftloop_core.topics import Topic


class EventSink(Protocol):
    """Where the trainer's events go."""

    async def publish(self, topic: Topic, event: Event) -> None:
        """Publish `event` on `topic` with its Kafka key."""
        ...


class KafkaEventSink:
    """Publishes through a (started) FastStream Kafka broker."""

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker

    async def publish(self, topic: Topic, event: Event) -> None:
        """Publish `event` on `topic` keyed by its ordering id."""
        await self.broker.publish(event, topic=str(topic), key=event_key(topic, event))


class RunInProgress(RuntimeError):
    """Another training run holds the lock."""


class RunLock:
    """An exclusive, non-blocking file lock: one training run at a time across processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            RunInProgress: another run holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held open while the run lasts
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.close()
            raise RunInProgress(
                "a training run is already in progress; wait for it (`raftloop train --status`)"
            ) from exc
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        """Give the lock back."""
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fh is not None


class JobFailed(RuntimeError):
    """A training or evaluation process exited with an error."""


async def run_job(
    module: str, config: Path, log_path: Path, *, env: Mapping[str, str] | None = None
) -> None:
    """Run `python -m <module> --config <config>` as a child process, its output to `log_path`.

    `env` adds variables (secrets such as the judge's key travel this way, not in the config).

    Awaiting the child (not blocking on it) keeps the service's event loop and consumer live.

    Raises:
        JobFailed: the process exited non-zero; the message carries the end of its log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Passive OpenMP waiting: the job shares the cores with the serving gateway (see Makefile).
    defaults = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    full_env = (
        os.environ | defaults | {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"} | dict(env or {})
    )
    log = await asyncio.to_thread(open, log_path, "ab")
    with log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            "--config",
            str(config),
            stdout=log,
            stderr=log,
            env=full_env,
        )
        try:
            code = await process.wait()
        except asyncio.CancelledError:
            process.kill()
            await process.wait()
            raise
    if code != 0:
        text = await asyncio.to_thread(log_path.read_text, errors="replace")
        tail = text[-1500:]
        raise JobFailed(f"{module} exited with {code}; see {log_path}:\n{tail}")
