"""The spool and the capture publisher: order, durability and no duplicates after an outage."""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import uuid4

import pytest

from raftloop_core.events import ChatCompleted, ChatMessage
from raftloop_core.topics import Topic
from raftloop_gateway.capture import CapturePublisher
from raftloop_gateway.spool import Record, Spool, SpoolFull


def _event(n: int) -> ChatCompleted:
    return ChatCompleted(
        interaction_id=uuid4(),
        conversation_id="c",
        model="m",
        base_model="b",
        messages=[ChatMessage(role="user", content=f"q{n}")],
        answer=f"a{n}",
    )


class FakeBroker:
    """A `Send` that can be taken down and brought back."""

    def __init__(self) -> None:
        self.up = True
        self.received: list[Record] = []

    async def __call__(self, records: list[Record]) -> list[Record]:
        if not self.up:
            return records
        self.received.extend(records)
        return []


def test_spool_is_fifo_across_segments_and_resumes(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1_000_000, segment_bytes=200)
    records = [Record("t", f"k{i}".encode(), b'{"n":%d}' % i) for i in range(20)]
    for r in records:
        spool.append([r])
    assert len(list(tmp_path.glob("*.jsonl"))) > 1
    drained: list[Record] = []
    head = spool.peek(3)
    assert head is not None
    segment, done, batch = head
    spool.commit(segment, done, len(batch))
    drained.extend(batch)
    again = Spool(tmp_path, max_bytes=1_000_000, segment_bytes=200)  # a restart resumes
    while (head := again.peek(5)) is not None:
        segment, done, batch = head
        again.commit(segment, done, len(batch))
        drained.extend(batch)
    assert drained == records
    assert not again.pending
    assert list(tmp_path.iterdir()) == []


def test_spool_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=300, segment_bytes=100)
    spool.append([Record("t", b"k", b"x" * 100)])
    with pytest.raises(SpoolFull, match="GATEWAY_SPOOL_MAX_BYTES"):
        spool.append([Record("t", b"k", b"x" * 200)])


async def test_publisher_spools_while_down_and_drains_in_order_once(tmp_path: Path) -> None:
    broker = FakeBroker()
    spool = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=2_000)
    publisher = CapturePublisher(broker, spool, retry_s=0.05, retry_max_s=0.1)
    publisher.start()
    events = [_event(i) for i in range(30)]
    for e in events[:5]:
        publisher.submit(Topic.CHAT_COMPLETED, e)
    await asyncio.sleep(0.05)
    broker.up = False
    for e in events[5:25]:
        publisher.submit(Topic.CHAT_COMPLETED, e)
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)
    assert spool.pending
    broker.up = True
    for e in events[25:]:
        publisher.submit(Topic.CHAT_COMPLETED, e)
    for _ in range(200):
        if len(broker.received) == len(events) and not spool.pending:
            break
        await asyncio.sleep(0.02)
    await publisher.stop()
    got = [ChatCompleted.model_validate_json(r.value).event_id for r in broker.received]
    assert got == [e.event_id for e in events]  # all, once, in order
    assert broker.received[0].key == str(events[0].interaction_id).encode()


async def test_stop_spools_what_is_still_queued(tmp_path: Path) -> None:
    broker = FakeBroker()
    broker.up = False
    spool = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=2_000)
    publisher = CapturePublisher(broker, spool, retry_s=10)
    publisher.start()
    for i in range(3):
        publisher.submit(Topic.CHAT_COMPLETED, _event(i))
    await publisher.stop(flush_s=0.2)
    head = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=2_000).peek(10)
    assert head is not None
    assert len(head[2]) == 3


async def test_the_spool_drains_only_after_the_probe_says_the_broker_is_back(
    tmp_path: Path,
) -> None:
    broker = FakeBroker()
    broker.up = False
    answers = [False, False, True]
    probes: list[bool] = []

    async def probe() -> bool:
        probes.append(answers[len(probes)] if len(probes) < len(answers) else True)
        return probes[-1]

    spool = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=2_000)
    publisher = CapturePublisher(broker, spool, retry_s=0.02, retry_max_s=0.05, probe=probe)
    publisher.start()
    events = [_event(i) for i in range(5)]
    for e in events:
        publisher.submit(Topic.CHAT_COMPLETED, e)
    for _ in range(100):
        if spool.pending:
            break
        await asyncio.sleep(0.02)
    broker.up = True
    for _ in range(300):
        if len(broker.received) == len(events):
            break
        await asyncio.sleep(0.02)
    await publisher.stop()
    assert probes[:3] == [False, False, True]  # refused twice, drained after the third
    assert [ChatCompleted.model_validate_json(r.value).event_id for r in broker.received] == [
        e.event_id for e in events
    ]
