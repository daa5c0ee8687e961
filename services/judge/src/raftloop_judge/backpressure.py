"""Backpressure from the judge endpoint: fewer requests at once when it says it is full.

Slowness is not a failure (issue #18). An endpoint that answers slowly is simply waited for; an
endpoint that answers 429 ("lane full, retry after N s", the gateway's admission lanes) makes the
judge halve how many requests it keeps in flight and wait, and the limit grows back by one
request per window of successes (additive increase, multiplicative decrease). Only a request
that gets no answer within the stall timeout counts as a failure (`EndpointStalled`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)


class EndpointStalled(Exception):
    """The endpoint gave no answer within the stall timeout: retried like an error."""


class AdaptiveLimit:
    """A semaphore whose size follows the endpoint: halved on overload, regrown on success."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self.in_flight = 0
        self._successes = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the `limit` places while the block runs."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
        try:
            yield
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    async def overloaded(self) -> None:
        """The endpoint said it is full: keep half as many requests in flight (at least one)."""
        async with self._changed:
            before, self.limit = self.limit, max(1, self.limit // 2)
            self._successes = 0
        if self.limit < before:
            log.warning(
                "judge endpoint overloaded; fewer requests in flight",
                extra={"concurrency": self.limit, "was": before},
            )

    async def succeeded(self) -> None:
        """One answer: after `limit` answers in a row, allow one more request in flight."""
        async with self._changed:
            if self.limit >= self.ceiling:
                return
            self._successes += 1
            if self._successes >= self.limit:
                self.limit += 1
                self._successes = 0
                self._changed.notify_all()
