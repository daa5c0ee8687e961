"""The adaptive limit: halved when the endpoint is full, regrown one place per window."""

from __future__ import annotations

import asyncio

from raftloop_judge.backpressure import AdaptiveLimit


async def test_overload_halves_the_limit_down_to_one() -> None:
    limit = AdaptiveLimit(8)
    for expected in (4, 2, 1, 1):
        await limit.overloaded()
        assert limit.limit == expected


async def test_successes_regrow_the_limit_up_to_the_ceiling() -> None:
    limit = AdaptiveLimit(3)
    await limit.overloaded()  # 1
    await limit.succeeded()  # 1 answer at limit 1 -> 2
    assert limit.limit == 2
    await limit.succeeded()
    assert limit.limit == 2
    await limit.succeeded()  # 2 answers at limit 2 -> 3
    assert limit.limit == 3
    for _ in range(10):
        await limit.succeeded()
    assert limit.limit == 3


async def test_no_more_than_limit_in_flight() -> None:
    limit = AdaptiveLimit(4)
    await limit.overloaded()
    peak = 0

    async def work() -> None:
        nonlocal peak
        async with limit.slot():
            peak = max(peak, limit.in_flight)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(work() for _ in range(10)))
    assert peak == 2
    assert limit.in_flight == 0
