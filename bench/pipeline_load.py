"""Load for the pipeline benchmark: chats through the gateway, and a burst of captured chats.

Every question is new (the trainer keeps one example per question and answer) and spelled
without digits (ingest redacts digit runs that look like phone numbers, which made questions
equal).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from uuid import uuid4

from bench.pipeline_stack import CHAT_ANSWER, Stack
from bench.raw_http import Client
from raftloop_core.events import ChatCompleted, ChatMessage, event_key
from raftloop_core.topics import Topic


def letters(n: int) -> str:
    """`n` in base 26, as lowercase letters (digits could be redacted as phone numbers)."""
    out = ""
    while True:
        n, digit = divmod(n, 26)
        out = chr(ord("a") + digit) + out
        if n == 0:
            return out


def new_tag() -> str:
    """A run tag of letters, so that each phase's questions differ from the others'."""
    return letters(uuid4().int % 26**6)


def question(tag: str, i: int) -> str:
    """A new question; the trainer keeps one example per question and answer."""
    return f"How long do refunds take for the order called {tag} {letters(i)}?"


def chat_body(tag: str, i: int) -> bytes:
    """A chat request."""
    messages = [{"role": "user", "content": question(tag, i)}]
    return json.dumps({"model": "raftloop", "messages": messages, "max_tokens": 32}).encode()


@dataclass
class Load:
    """What the load generator sent and how it went."""

    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)


async def send_chats(stack: Stack, count: int, *, rate: float | None, concurrency: int) -> Load:
    """`count` chats through the gateway: at `rate` per second, or closed loop if None."""
    client = Client(f"{stack.urls['gateway']}/v1/chat/completions", stack.auth("client"))
    tag, load, next_i = new_tag(), Load(), 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal next_i
        while next_i < count:
            i, next_i = next_i, next_i + 1
            if rate is not None and (delay := start + i / rate - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            try:
                status = await client.post(chat_body(tag, i))
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                status = 0
            load.ok += status == 200
            load.errors += status != 200
            load.statuses[status] = load.statuses.get(status, 0) + 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    load.seconds = time.perf_counter() - start
    client.close()
    return load


async def produce_burst(stack: Stack, count: int, seconds: float) -> float:
    """`count` chat.completed events, paced evenly over `seconds`; returns the seconds taken."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka.servers, acks="all", linger_ms=20, enable_idempotence=False
    )
    await producer.start()
    headers = [("content-type", b"application/json")]
    tag, start, pending = new_tag(), time.perf_counter(), []
    try:
        for i in range(count):
            if i % 10 == 0 and (delay := start + i * seconds / count - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            event = burst_event(tag, i)
            key = event_key(Topic.CHAT_COMPLETED, event)
            value = event.model_dump_json().encode()
            pending.append(
                await producer.send(Topic.CHAT_COMPLETED, value, key=key, headers=headers)
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - start


def burst_event(tag: str, i: int) -> ChatCompleted:
    """The event the gateway captures for one answered chat."""
    return ChatCompleted(
        interaction_id=uuid4(),
        conversation_id=f"burst-{tag}-{i}",
        key_id="bench-client",
        model="raftloop",
        base_model="stub",
        messages=[ChatMessage(role="user", content=question(tag, i))],
        answer=CHAT_ANSWER,
        finish_reason="stop",
        latency_ms=1.0,
    )
