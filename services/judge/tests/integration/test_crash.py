"""Kill -9 the judge process mid-batch, restart it: exactly one judgement per interaction."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

import pytest

from raftloop_core.embedded import free_port
from raftloop_core.events import InteractionJudged
from raftloop_core.messaging import consumer_options, ensure_topics, make_broker
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import spawn_service, stop_service, uvicorn_command
from raftloop_core.topics import dead_letter

from ..endpoints import serve, stub_app
from .test_app import wait_for
from .test_endpoint_behaviours import QA, ingested

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slow_endpoint() -> Iterator[str]:
    with serve(stub_app("logprobs", latency_s=0.25)) as url:
        yield url


def start_judge(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    return spawn_service(
        uvicorn_command("raftloop_judge.main:build", port),
        env=env,
        log=log,
        ready_url=f"http://127.0.0.1:{port}/healthz",
        name="judge",
    )


async def test_kill_9_during_judging_then_restart_gives_one_judgement_each(
    kafka_broker: str,
    kafka_settings: KafkaSettings,
    unique: Callable[[str], str],
    tmp_path: Path,
    slow_endpoint: str,
) -> None:
    topics = {"in": unique("ingested"), "out": unique("judged")}
    ensure_topics(kafka_settings, {topics["in"]: 3, dead_letter(topics["in"]): 1, topics["out"]: 3})
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAFTLOOP_DATA_DIR": str(tmp_path / "data"),
        "RAFTLOOP_LOG_FORMAT": "text",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker,
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        "JUDGE_ENDPOINT_URL": slow_endpoint,
        "JUDGE_ENDPOINT_API_KEY": "test-key",
        "JUDGE_CRITERIA": json.dumps(["helpfulness", "tone"]),
        "JUDGE_INPUT_TOPIC": topics["in"],
        "JUDGE_OUTPUT_TOPIC": topics["out"],
        "JUDGE_CONSUMER_GROUP": unique("judge"),
        "JUDGE_REVIEW_TOPIC": unique("review"),
        "JUDGE_CURATED_TOPIC": unique("curated"),
        "JUDGE_BATCH_SIZE": "6",
        "JUDGE_CONCURRENCY": "4",
    }
    probe = make_broker(kafka_settings)
    seen: dict[UUID, list[UUID]] = defaultdict(list)

    @probe.subscriber(topics["out"], **consumer_options(kafka_settings, group_id=unique("p")))  # type: ignore[untyped-decorator]
    async def collect(event: InteractionJudged) -> None:
        seen[event.interaction.interaction_id].append(event.event_id)

    events = [ingested(q, f"{a} ({i})") for i in range(10) for q, a in QA]
    log = tmp_path / "judge.log"
    async with probe:
        await probe.start()
        for event in events:
            key = str(event.interaction.interaction_id).encode()
            await probe.publish(event, topic=topics["in"], key=key)
        proc = await asyncio.to_thread(start_judge, env, free_port(), log)
        try:
            await wait_for(lambda: len(seen) >= 6, timeout_s=120)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        killed_at = len(seen)
        proc = await asyncio.to_thread(start_judge, env, free_port(), log)
        try:
            await wait_for(lambda: len(seen) == len(events), timeout_s=180)
            await asyncio.sleep(2.0)
        finally:
            stop_service(proc, timeout_s=30)

    assert killed_at < len(events), "the kill came too late to test anything"
    assert set(seen) == {e.interaction.interaction_id for e in events}
    # At-least-once may repeat a message, but always with the same id: one after dedupe.
    assert all(len(set(ids)) == 1 for ids in seen.values())
    redelivered = sum(len(ids) - 1 for ids in seen.values())
    print(f"killed after {killed_at}/{len(events)}; {redelivered} redelivered copies")  # noqa: T201
