"""Bounded concurrency, per-lane queues and weighted sharing of generation slots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, cast

import pytest

from raftloop_gateway import routes
from raftloop_gateway.domain import Overloaded, Piece
from raftloop_gateway.limits import Admission

if TYPE_CHECKING:
    from fastapi import Request

    from raftloop_gateway.chat import ChatService, Turn


async def test_admission_queues_then_refuses() -> None:
    admission = Admission(concurrency=1, queue=1)
    release = asyncio.Event()
    entered: list[int] = []

    async def hold(i: int) -> None:
        async with admission.slot():
            entered.append(i)
            await release.wait()

    first = asyncio.create_task(hold(1))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(hold(2))  # queued
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded, match="at capacity"):
        async with admission.slot():
            pass
    assert entered == [1]
    release.set()
    await asyncio.gather(first, second)
    assert entered == [1, 2]
    assert admission.running == admission.waiting == 0


async def test_a_flooded_lane_does_not_starve_the_other() -> None:
    admission = Admission(concurrency=2, queue=8, weights={"chat": 1, "internal": 1})
    release = asyncio.Event()
    order: list[str] = []

    async def hold(lane: str) -> None:
        async with admission.slot(lane):  # type: ignore[arg-type]
            order.append(lane)
            await release.wait()
            await asyncio.sleep(0)

    chats = [asyncio.create_task(hold("chat")) for _ in range(8)]  # a burst of chat clients
    await asyncio.sleep(0.01)
    judge = [asyncio.create_task(hold("internal")) for _ in range(2)]  # then the judge
    await asyncio.sleep(0.01)
    assert order == ["chat", "chat"]
    assert admission.waiting == 8
    release.set()
    await asyncio.gather(*chats, *judge)
    # The judge's two requests went out with the first freed slots, not after the burst.
    assert order.index("internal") <= 3
    assert order[:6].count("internal") == 2
    assert admission.running == admission.waiting == 0


async def test_each_lane_has_its_own_queue_bound() -> None:
    admission = Admission(concurrency=1, queue=1, queues={"chat": 1, "internal": 2})
    release = asyncio.Event()

    async def hold(lane: str) -> None:
        async with admission.slot(lane):  # type: ignore[arg-type]
            await release.wait()

    tasks = [asyncio.create_task(hold("chat")), asyncio.create_task(hold("chat"))]
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded, match="queued for chat callers") as refused:
        async with admission.slot("chat"):
            pass
    assert refused.value.retry_after == 1
    tasks += [asyncio.create_task(hold("internal")) for _ in range(2)]  # still room there
    await asyncio.sleep(0.01)
    assert admission.waiting == 3
    release.set()
    await asyncio.gather(*tasks)
    assert admission.running == admission.waiting == 0


async def test_a_caller_that_leaves_the_queue_gives_its_place_back() -> None:
    admission = Admission(concurrency=1, queue=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.slot():
            await release.wait()

    first = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    queued.cancel()
    await asyncio.sleep(0.01)
    assert admission.waiting == 0
    third = asyncio.create_task(hold())  # the freed queue place is usable again
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(first, third)
    assert admission.running == 0


class SlowBackend:
    """Yields one piece, then would generate for an hour; records that it was closed."""

    def __init__(self) -> None:
        self.closed = False

    async def generate(self, request: object) -> AsyncIterator[Piece]:
        try:
            yield Piece(text="a")
            await asyncio.sleep(3600)
        finally:
            self.closed = True


class Disconnects:
    """A request whose client goes away after `polls` checks."""

    def __init__(self, polls: int) -> None:
        self.polls = polls

    async def is_disconnected(self) -> bool:
        self.polls -= 1
        return self.polls < 0


class Finished:
    def __init__(self) -> None:
        self.turns: list[object] = []

    def __call__(self, turn: object) -> None:
        self.turns.append(turn)


async def test_a_client_that_leaves_frees_its_slot_and_stops_the_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(routes, "DISCONNECT_POLL_S", 0.01)
    backend, finished = SlowBackend(), Finished()
    service = SimpleNamespace(backend=backend, admission=Admission(1, 0), finish=finished)
    pieces: list[Piece] = []
    turn = SimpleNamespace(generation=None, add=pieces.append)
    # Stand-ins with only what `_complete_unless_gone` touches.
    gone = routes._complete_unless_gone(
        cast("ChatService", service), cast("Turn", turn), cast("Request", Disconnects(polls=2))
    )
    answered = await asyncio.wait_for(gone, timeout=10)
    assert answered is False
    assert backend.closed  # the generation was stopped, not left running
    assert service.admission.running == 0
    assert service.admission.waiting == 0
    assert finished.turns == []  # nothing answered, nothing captured
    assert [p.text for p in pieces] == ["a"]
