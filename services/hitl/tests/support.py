"""Helpers shared by the hitl integration tests."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx

from raftloop_core.messaging import ensure_topics
from raftloop_core.settings import DatabaseSettings, KafkaSettings, RuntimeSettings
from raftloop_core.topics import all_topics
from raftloop_hitl.settings import HitlSettings

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def prefixed_topics(kafka: KafkaSettings) -> str:
    """Create a fresh set of every topic under a unique prefix; return the prefix."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    ensure_topics(kafka, {prefix + name: n for name, n in all_topics().items()})
    return prefix


def settings_for(
    data_dir: Path, kafka: KafkaSettings, prefix: str, **extra: object
) -> HitlSettings:
    """Settings of a test instance: its own data dir, topics and consumer group."""
    return HitlSettings(
        topic_prefix=prefix,
        group_id=f"hitl-{uuid.uuid4().hex[:8]}",
        kafka=kafka,
        runtime=RuntimeSettings(data_dir=data_dir, log_format="text"),
        database=DatabaseSettings(url=None),
        outbox_poll_s=0.1,
        ops_refresh_s=60,
        **extra,  # type: ignore[arg-type]
    )


def env_for(settings: HitlSettings, port: int) -> dict[str, str]:
    """The environment that makes `raftloop_hitl.main:build` build the same instance."""
    return {
        "HITL_TOPIC_PREFIX": settings.topic_prefix,
        "HITL_GROUP_ID": settings.group_id,
        "HITL_PORT": str(port),
        "HITL_OUTBOX_POLL_S": "0.1",
        "HITL_LEASE_SECONDS": str(settings.lease_seconds),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        "RAFTLOOP_DATA_DIR": str(settings.runtime.data_dir),
        "RAFTLOOP_LOG_FORMAT": "text",
    }


def csrf_of(html: str) -> str:
    """The CSRF token embedded in a page."""
    found = CSRF_RE.search(html)
    assert found, "page has no CSRF token"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    page = await client.get("/login")
    token = csrf_of(page.text)
    done = await client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token}
    )
    assert done.status_code == 303, done.text
    return csrf_of((await client.get("/queue")).text)
