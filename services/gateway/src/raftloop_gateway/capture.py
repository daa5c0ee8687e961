"""Capture: events leave the request path through an in-memory queue and one publisher task.

Answering never waits on the broker. When a publish fails (broker unreachable), the events go
to the fsync'd disk spool, and so does everything after them until the spool is drained, so
events reach Kafka in the order they were answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from raftloop_core.events import Event, event_key
from raftloop_core.topics import Topic
from raftloop_gateway.spool import Record, Spool, SpoolFull

log = logging.getLogger(__name__)

Send = Callable[[list[Record]], Awaitable[list[Record]]]
"""Publishes records; returns those that failed, in order."""

Probe = Callable[[], Coroutine[Any, Any, bool]]
"""Checks the broker is back (and its topics exist) before the spool is drained."""

DRAIN_BATCH = 200
BATCH = 500


class CapturePublisher:
    """The `EventSink` of the gateway: queue, publisher task, disk spool."""

    def __init__(
        self,
        send: Send,
        spool: Spool,
        *,
        queue_size: int = 10_000,
        retry_s: float = 1.0,
        retry_max_s: float = 10.0,
        linger_s: float = 0.0,
        probe: Probe | None = None,
    ) -> None:
        self._send = send
        self.spool = spool
        self._queue: deque[Record] = deque()
        self._queue_size = queue_size
        self._wakeup = asyncio.Event()
        self._retry_s = retry_s
        self._retry_max_s = retry_max_s
        self._backoff = retry_s
        self._linger_s = linger_s
        self._probe = probe
        self._probing: asyncio.Task[bool] | None = None
        self._next_attempt = 0.0
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.spooled = 0

    @property
    def accepting(self) -> bool:
        """False when the spool is full (answering then could lose an interaction)."""
        return not self.spool.full

    @property
    def backlog(self) -> int:
        """Events in memory not yet published or spooled."""
        return len(self._queue)

    def submit(self, topic: Topic, event: Event) -> None:
        """Queue an event; never waits on the broker."""
        record = Record(str(topic), event_key(topic, event), event.model_dump_json().encode())
        if len(self._queue) >= self._queue_size:
            self._to_spool_now([*self._queue, record])
            self._queue.clear()
            return
        self._queue.append(record)
        self._wakeup.set()

    def _to_spool_now(self, records: list[Record]) -> None:
        # Only when the in-memory queue is full: the publisher is far behind, keep events durable.
        self.spool.append(records)
        self.spooled += len(records)

    def start(self) -> None:
        """Start the publisher task."""
        self._task = asyncio.create_task(self._run(), name="capture-publisher")

    async def stop(self, *, flush_s: float = 5.0) -> None:
        """Publish (or spool) what is queued, then stop."""
        deadline = time.monotonic() + flush_s
        # A short poll: the publisher task owns the queue and signals nothing on empty.
        while self._queue and time.monotonic() < deadline and not self.spool.pending:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if self._probing is not None:
            self._probing.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._queue:
            await asyncio.to_thread(self.spool.append, list(self._queue))
            self._queue.clear()

    def _take(self, limit: int = BATCH) -> list[Record]:
        batch: list[Record] = []
        while self._queue and len(batch) < limit:
            batch.append(self._queue.popleft())
        return batch

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except SpoolFull as exc:
                log.error("capture spool full", extra={"error": str(exc)})
                await asyncio.sleep(self._retry_s)
            except Exception:
                log.exception("capture publisher step failed; retrying")
                await asyncio.sleep(self._retry_s)

    async def _step(self) -> None:
        if self.spool.pending:
            moved = self._take(len(self._queue))
            if moved:
                await asyncio.to_thread(self.spool.append, moved)
                self.spooled += len(moved)
            if self._ready_to_drain():
                await self._drain()
            else:
                await self._sleep(0.2)  # new events wake it: they go to the spool at once
            return
        if not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
            return
        if self._linger_s and len(self._queue) < BATCH:
            # Gather a few events per produce request: fewer round trips, less CPU per event.
            await asyncio.sleep(self._linger_s)
        batch = self._take()
        failed = await self._send(batch)
        self.published += len(batch) - len(failed)
        if failed:
            log.warning("broker unreachable; spooling events", extra={"count": len(failed)})
            # Whatever is queued behind the failures goes to the spool too, to keep order.
            rest = self._take(len(self._queue))
            await asyncio.to_thread(self.spool.append, failed + rest)
            self.spooled += len(failed) + len(rest)
            self._schedule_retry()

    def _ready_to_drain(self) -> bool:
        # The probe runs beside the loop, so events keep reaching the spool while it waits.
        if time.monotonic() < self._next_attempt:
            return False
        if self._probe is None:
            return True
        if self._probing is None:
            self._probing = asyncio.create_task(self._probe(), name="broker-probe")
            return False
        if not self._probing.done():
            return False
        probing, self._probing = self._probing, None
        if not probing.cancelled() and probing.exception() is None and probing.result():
            return True
        self._schedule_retry()
        return False

    async def _drain(self) -> None:
        while True:
            head = await asyncio.to_thread(self.spool.peek, DRAIN_BATCH)
            if head is None:
                self._backoff = self._retry_s
                log.info("capture spool drained")
                return
            segment, done, records = head
            failed = await self._send(records) if records else []
            sent = len(records) - len(failed)
            # Everything before the first failure is published; commit exactly that prefix.
            ok = next((i for i, r in enumerate(records) if r in failed), len(records))
            await asyncio.to_thread(self.spool.commit, segment, done, ok)
            self.published += sent
            if failed:
                self._schedule_retry()
                return

    def _schedule_retry(self) -> None:
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._retry_max_s, self._backoff * 2)

    async def _sleep(self, seconds: float) -> None:
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), max(0.0, seconds))
