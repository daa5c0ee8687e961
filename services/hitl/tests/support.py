"""Helpers shared by the hitl integration tests."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import httpx

from raftloop_core.messaging import ensure_topics
from raftloop_core.settings import DatabaseSettings, KafkaSettings, RuntimeSettings
from raftloop_core.testing import spawn_service, stop_service, uvicorn_command
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


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """The real hitl service as a uvicorn process (what `raftloop up` runs)."""

    def __init__(self, settings: HitlSettings, log_path: Path, port: int | None = None) -> None:
        self.settings = settings
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> None:
        """Start it and wait until `/readyz` answers 200."""
        self.proc = spawn_service(
            uvicorn_command("raftloop_hitl.main:build", self.port),
            env=os.environ | env_for(self.settings, self.port),
            log=self.log_path,
            ready_url=f"{self.url}/readyz",
            timeout_s=timeout_s,
            name="hitl",
        )

    def kill9(self) -> None:
        """SIGKILL: no shutdown hook, no flush."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.proc is not None:
            stop_service(self.proc, timeout_s=30)


def read_topic(
    kafka: KafkaSettings, topic: str, *, expect: int, timeout_s: float = 60.0, settle_s: float = 2.0
) -> list[tuple[bytes | None, bytes]]:
    """Every message of a topic from the beginning: waits for `expect`, then a bit longer."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=kafka.servers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout_s
        settled: float | None = None
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend((r.key, r.value) for r in records)
            if len(out) >= expect:
                settled = settled or time.monotonic()
                if time.monotonic() - settled >= settle_s:
                    break
        return out
    finally:
        consumer.close()


async def publish_judged(kafka: KafkaSettings, prefix: str, events: list) -> None:  # type: ignore[type-arg]
    """Publish judged interactions on the real broker, keyed like the judge does."""
    from raftloop_core.events import event_key
    from raftloop_core.messaging import make_broker
    from raftloop_core.topics import Topic

    broker = make_broker(kafka)
    async with broker:
        await broker.start()
        for event in events:
            await broker.publish(
                event,
                topic=prefix + Topic.INTERACTION_JUDGED,
                key=event_key(Topic.INTERACTION_JUDGED, event),
            )
