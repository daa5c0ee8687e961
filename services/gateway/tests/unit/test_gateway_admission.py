"""Bounded concurrency and queue; the adapter gate keeps in-flight requests on their adapter."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from raftloop_gateway import routes
from raftloop_gateway.domain import Overloaded, Piece
from raftloop_gateway.gate import AdapterGate
from raftloop_gateway.limits import Admission


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


def test_gate_lets_one_adapter_share_and_makes_a_switch_wait() -> None:
    gate = AdapterGate()
    active: list[str] = []
    log: list[tuple[str, str]] = []

    def activate(key: str) -> None:
        active.append(key)

    def run(key: str, hold_s: float) -> None:
        with gate.use(key, activate):
            log.append(("start", key))
            time.sleep(hold_s)
            log.append(("end", key))

    a1 = threading.Thread(target=run, args=("A", 0.3))
    a1.start()
    time.sleep(0.05)
    a2 = threading.Thread(target=run, args=("A", 0.05))
    a2.start()  # same adapter: runs alongside
    time.sleep(0.05)
    b = threading.Thread(target=run, args=("B", 0.01))
    b.start()  # another adapter: waits for both A requests
    for t in (a1, a2, b):
        t.join(5)
    assert active == ["A", "B"]
    assert log.index(("start", "B")) > log.index(("end", "A"), log.index(("start", "A")) + 1)
    assert log[-2:] == [("start", "B"), ("end", "B")]


def test_exclusive_waits_for_users() -> None:
    gate = AdapterGate()
    order: list[str] = []

    def user() -> None:
        with gate.use("A", lambda _: None):
            time.sleep(0.2)
            order.append("user done")

    t = threading.Thread(target=user)
    t.start()
    time.sleep(0.05)
    with gate.exclusive():
        order.append("exclusive")
    t.join()
    assert order == ["user done", "exclusive"]


class SlowBackend:
    """Yields one piece, then would generate for an hour; records that it was closed."""

    def __init__(self) -> None:
        self.closed = False

    async def generate(self, request: object):
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


async def test_a_client_that_leaves_frees_its_slot_and_stops_the_generation(monkeypatch) -> None:
    monkeypatch.setattr(routes, "DISCONNECT_POLL_S", 0.01)
    backend, finished = SlowBackend(), Finished()
    service = SimpleNamespace(backend=backend, admission=Admission(1, 0), finish=finished)
    pieces: list[Piece] = []
    turn = SimpleNamespace(generation=None, add=pieces.append)
    answered = await asyncio.wait_for(
        routes._complete_unless_gone(service, turn, Disconnects(polls=2)), timeout=10
    )
    assert answered is False
    assert backend.closed  # the generation was stopped, not left running
    assert service.admission.running == 0
    assert service.admission.waiting == 0
    assert finished.turns == []  # nothing answered, nothing captured
    assert [p.text for p in pieces] == ["a"]
