"""Per-key rate limits (requests and tokens per minute) and bounded generation admission."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from raftloop_gateway.domain import Overloaded, RateLimited


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


class Admission:
    """At most `concurrency` generations at once and `queue` waiting; beyond that, 429."""

    def __init__(self, concurrency: int, queue: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.queue = queue
        self.waiting = 0
        self.running = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a generation slot for the duration of the block.

        Raises:
            Overloaded: every slot is busy and the queue is full.
        """
        if self._slots.locked() and self.waiting >= self.queue:
            raise Overloaded(
                f"the gateway is at capacity ({self.concurrency} running, {self.waiting} "
                "queued); retry shortly",
                retry_after=1,
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
