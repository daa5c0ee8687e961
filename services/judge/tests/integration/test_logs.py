"""Every line the judge process writes is JSON, and a gone broker does not flood it (issue #18)."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from raftloop_core.embedded import EmbeddedBroker, free_port
from raftloop_core.logs import DEPENDENCIES
from raftloop_core.messaging import ensure_topics
from raftloop_core.settings import KafkaSettings

from .test_crash import start_judge

pytestmark = pytest.mark.integration

OUTAGE_S = 6.0
# RepeatLimiter's windows (1 s, doubling) allow lines at 0, 1, 3 and 7 s of a 6 s outage,
# plus one when a logger falls quiet for a window and starts again.
MAX_LINES_PER_LOGGER = 5


def dependency(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in DEPENDENCIES)


async def test_judge_logs_are_json_and_a_gone_broker_is_rate_limited(
    unique: Callable[[str], str], tmp_path: Path
) -> None:
    broker = EmbeddedBroker(port=free_port(), log_path=tmp_path / "tansu.log").start()
    try:
        ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap_servers))
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "RAFTLOOP_DATA_DIR": str(tmp_path / "data"),
            "RAFTLOOP_LOG_FORMAT": "json",
            "RAFTLOOP_LOG_LEVEL": "INFO",
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "KAFKA_SESSION_TIMEOUT_MS": "3000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            "JUDGE_ENDPOINT_URL": "http://127.0.0.1:9/v1",
            "JUDGE_ENDPOINT_API_KEY": "test-key",
            "JUDGE_CONSUMER_GROUP": unique("judge"),
        }
        log = tmp_path / "judge.log"  # stdout and stderr together
        proc = await asyncio.to_thread(start_judge, env, free_port(), log)
    finally:
        broker.stop()  # the broker goes away under the running judge
    try:
        await asyncio.sleep(OUTAGE_S)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    lines = log.read_text().splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a line that is not JSON: {line[:300]!r}")
    assert all(isinstance(r, dict) and {"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(r["msg"] == "Application startup complete." for r in records)

    by_logger = Counter(
        r["logger"]
        for r in records
        if dependency(r["logger"]) and r["level"] in ("warning", "error", "critical")
    )
    assert by_logger, "the broker's absence went unreported"
    assert max(by_logger.values()) <= MAX_LINES_PER_LOGGER, by_logger
    suppressed = sum(int(r.get("suppressed", 0)) for r in records)
    assert suppressed > 0, "aiokafka repeats itself without a broker; nothing was left out?"
    print(f"{len(lines)} lines, {suppressed} repeated lines left out: {dict(by_logger)}")  # noqa: T201
