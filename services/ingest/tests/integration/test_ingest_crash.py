"""Kill -9 of the real ingest process at random points while 1,000 interactions flow."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

import pytest
from faststream.kafka import KafkaBroker
from ingest_support import Collector, chat, create_topics, feedback, wait_for

from raftloop_core import events as ev
from raftloop_core.embedded import free_port
from raftloop_core.messaging import make_broker
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import spawn_service, uvicorn_command, wait_ready
from raftloop_core.topics import Topic

pytestmark = pytest.mark.integration

TOTAL = 1_000
KILLS = 3


def start_service(
    kafka: KafkaSettings, prefix: str, data_dir: Path, log: Path
) -> subprocess.Popen[bytes]:
    port = free_port()
    env = os.environ | {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_SESSION_TIMEOUT_MS": str(kafka.session_timeout_ms),
        "KAFKA_HEARTBEAT_INTERVAL_MS": str(kafka.heartbeat_interval_ms),
        "INGEST_TOPIC_PREFIX": prefix,
        "INGEST_GROUP_ID": f"{prefix}ingest",
        "RAFTLOOP_DATA_DIR": str(data_dir),
        "RAFTLOOP_LOG_LEVEL": "WARNING",
    }
    env.pop("DATABASE_URL", None)
    cmd = [*uvicorn_command("raftloop_ingest.main:build", port), "--log-level", "warning"]
    proc = spawn_service(cmd, env=env, log=log)
    proc.port = port  # type: ignore[attr-defined]
    return proc


async def wait_healthy(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 240.0) -> None:
    # Generous: with five engineers' tests on two cores, importing the service alone has
    # taken 45 s.
    url = f"http://127.0.0.1:{proc.port}/healthz"  # type: ignore[attr-defined]
    await asyncio.to_thread(wait_ready, proc, url, log=log, timeout_s=timeout_s, name="ingest")


async def test_kill_minus_9_loses_nothing_and_duplicates_share_event_ids(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique("crash") + "."
    create_topics(kafka_settings, prefix)
    ingested = f"{prefix}{Topic.INTERACTION_INGESTED}"
    rng = random.Random(4)
    chats = [
        chat(f"Question {i}: how do I restore file {i}? mail me at u{i}@example.com")
        for i in range(TOTAL)
    ]
    feedbacks = [
        feedback(c.interaction_id, correction=f"fix {i}") for i, c in enumerate(chats[::10])
    ]
    log = tmp_path / "ingest.log"
    proc = start_service(kafka_settings, prefix, tmp_path / "data", log)
    broker = make_broker(kafka_settings)
    try:
        async with Collector(kafka_settings, [ingested]) as seen, broker:
            await broker.start()
            await wait_healthy(proc, log)
            producing = asyncio.create_task(produce(broker, prefix, chats, feedbacks))
            for kill in range(KILLS):
                target = rng.randint(100, 900) * (kill + 1) // KILLS

                def reached(t: int = target) -> bool:
                    return len(seen.on(ingested)) >= t

                await wait_for(reached, 180)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                proc = start_service(kafka_settings, prefix, tmp_path / "data", log)
                await wait_healthy(proc, log)
            await producing
            await wait_for(lambda: complete(seen.ingested(ingested), chats, feedbacks), 300)
            events = seen.ingested(ingested)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    by_key: dict[tuple[UUID, int], set[UUID]] = defaultdict(set)
    for e in events:
        by_key[(e.interaction.interaction_id, e.revision)].add(e.event_id)
    # Redeliveries after a kill republish the same event id, so deduping on it leaves one each.
    assert all(len(ids) == 1 for ids in by_key.values())
    assert {iid for iid, _ in by_key} == {c.interaction_id for c in chats}
    deduped = {e.event_id: e for e in events}
    firsts = [e for e in deduped.values() if e.revision == 1]
    assert len(firsts) == TOTAL
    with_feedback = {
        e.interaction.interaction_id for e in deduped.values() if e.interaction.feedback
    }
    assert with_feedback == {f.interaction_id for f in feedbacks}
    assert "u1@example.com" not in log.read_text()


async def produce(
    broker: KafkaBroker,
    prefix: str,
    chats: list[ev.ChatCompleted],
    feedbacks: list[ev.FeedbackReceived],
) -> None:
    fb = {f.interaction_id: f for f in feedbacks}
    for i, c in enumerate(chats):
        await broker.publish(
            c, topic=f"{prefix}{Topic.CHAT_COMPLETED}", key=ev.event_key(Topic.CHAT_COMPLETED, c)
        )
        if c.interaction_id in fb:
            f = fb[c.interaction_id]
            await broker.publish(
                f, topic=f"{prefix}{Topic.CHAT_FEEDBACK}", key=ev.event_key(Topic.CHAT_FEEDBACK, f)
            )
        if i % 50 == 0:
            await asyncio.sleep(0.05)  # keep the flow going across the kills


def complete(
    events: list[ev.InteractionIngested],
    chats: list[ev.ChatCompleted],
    feedbacks: list[ev.FeedbackReceived],
) -> bool:
    seen = {e.interaction.interaction_id for e in events}
    joined = {e.interaction.interaction_id for e in events if e.interaction.feedback}
    return len(seen) == len(chats) and len(joined) == len(feedbacks)
