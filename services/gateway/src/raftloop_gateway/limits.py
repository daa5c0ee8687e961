"""Per-key rate limits (requests and tokens per minute) and bounded generation admission."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from raftloop_gateway.domain import Lane, Overloaded, RateLimited


@dataclass
class _Bucket:
    capacity: float
    level: float
    stamp: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.capacity / 60.0)
        self.stamp = now

    def wait_s(self, need: float) -> int:
        return max(1, math.ceil((need - self.level) * 60.0 / self.capacity))


class RateLimiter:
    """Token buckets per key: one for requests, one for tokens, each refilled per minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._requests: dict[str, _Bucket] = {}
        self._tokens: dict[str, _Bucket] = {}

    def _bucket(self, table: dict[str, _Bucket], key: str, per_minute: int) -> _Bucket:
        now = self._clock()
        bucket = table.get(key)
        if bucket is None or bucket.capacity != per_minute:
            bucket = table[key] = _Bucket(per_minute, per_minute, now)
        bucket.refill(now)
        return bucket

    def admit(self, key: str, *, requests_per_minute: int, tokens_per_minute: int) -> None:
        """Take one request from the key's budget.

        Raises:
            RateLimited: the key has no requests or tokens left this minute.
        """
        tokens = self._bucket(self._tokens, key, tokens_per_minute)
        if tokens.level <= 0:
            raise RateLimited(
                f"token rate limit of {tokens_per_minute}/min reached for this key; "
                f"retry in {tokens.wait_s(1)} s",
                retry_after=tokens.wait_s(1),
            )
        requests = self._bucket(self._requests, key, requests_per_minute)
        if requests.level < 1:
            raise RateLimited(
                f"request rate limit of {requests_per_minute}/min reached for this key; "
                f"retry in {requests.wait_s(1)} s",
                retry_after=requests.wait_s(1),
            )
        requests.level -= 1

    def spend_tokens(self, key: str, count: int, *, tokens_per_minute: int) -> None:
        """Charge tokens a request used (the bucket may go negative and refill later)."""
        self._bucket(self._tokens, key, tokens_per_minute).level -= count


@dataclass
class _Lane:
    weight: int
    queue: int
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    running: int = 0
    served: float = 0.0  # slots granted / weight: the lane furthest behind goes next


class Admission:
    """Generation slots shared by lanes (chat clients, internal callers) in proportion to weights.

    At most `concurrency` generations run at once (the engine's batch). A freed slot goes to the
    waiting lane that has had the least service for its weight, so a flood in one lane slows
    it down without starving the other. Each lane queues at most its `queue` requests; beyond
    that it answers 429 with Retry-After.
    """

    def __init__(
        self,
        concurrency: int,
        queue: int,
        *,
        weights: dict[Lane, int] | None = None,
        queues: dict[Lane, int] | None = None,
    ) -> None:
        self.concurrency = concurrency
        weights = weights or {"chat": 1, "internal": 1}
        queues = queues or {}
        self.lanes: dict[Lane, _Lane] = {
            name: _Lane(weight, queues.get(name, queue)) for name, weight in weights.items()
        }
        self.running = 0

    @property
    def waiting(self) -> int:
        """Requests queued in every lane."""
        return sum(len(lane.waiters) for lane in self.lanes.values())

    @property
    def queue(self) -> int:
        """Queue places in every lane together."""
        return sum(lane.queue for lane in self.lanes.values())

    def _grant(self, lane: _Lane) -> None:
        lane.running += 1
        lane.served += 1 / lane.weight
        self.running += 1

    def _next(self) -> None:
        """Hand free slots to the waiting lanes that are furthest behind their share."""
        while self.running < self.concurrency:
            ready = [lane for lane in self.lanes.values() if lane.waiters]
            if not ready:
                return
            lane = min(ready, key=lambda candidate: candidate.served)
            waiter = lane.waiters.popleft()
            if waiter.done():  # its caller gave up while queued
                continue
            self._grant(lane)
            waiter.set_result(None)

    @asynccontextmanager
    async def slot(self, lane_name: Lane = "chat") -> AsyncIterator[None]:
        """Hold a generation slot of `lane_name` for the duration of the block.

        Raises:
            Overloaded: every slot is busy and this lane's queue is full.
        """
        lane = self.lanes[lane_name]
        if self.running < self.concurrency and not self.waiting:
            self._grant(lane)
        else:
            if len(lane.waiters) >= lane.queue:
                raise Overloaded(
                    f"the gateway is at capacity ({self.running} running, {len(lane.waiters)} "
                    f"queued for {lane_name} callers); retry shortly",
                    retry_after=1,
                )
            # A lane that was idle starts level with the others, not with credit it never used.
            busiest = [other.served for other in self.lanes.values() if other.waiters]
            lane.served = max(lane.served, min(busiest, default=lane.served))
            waiter = asyncio.get_running_loop().create_future()
            lane.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._release(lane)  # granted just as the caller left: pass it on
                else:
                    waiter.cancel()
                    if waiter in lane.waiters:
                        lane.waiters.remove(waiter)
                raise
        try:
            yield
        finally:
            self._release(lane)

    def _release(self, lane: _Lane) -> None:
        lane.running -= 1
        self.running -= 1
        self._next()
