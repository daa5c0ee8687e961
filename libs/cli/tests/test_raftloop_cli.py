"""The `raftloop` program as a user runs it: real processes, the real broker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from raftloop_cli.services import installed_services
from raftloop_cli.testing import Platform
from raftloop_core.settings import KafkaSettings

pytestmark = pytest.mark.integration
RAFTLOOP = [sys.executable, "-m", "raftloop_cli"]


def run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RAFTLOOP, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def test_status_shows_lag_of_a_group_that_consumed_part_of_a_topic(
    kafka_settings: KafkaSettings, unique: Callable[[str], str]
) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    topic, group = unique("status"), unique("g")
    producer = KafkaProducer(bootstrap_servers=kafka_settings.servers, acks="all")
    for i in range(10):
        producer.send(topic, key=b"k", value=f"m{i}".encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_settings.servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=3000,
        heartbeat_interval_ms=1000,
    )
    taken = 0
    deadline = time.monotonic() + 30
    while taken < 4 and time.monotonic() < deadline:
        taken += sum(len(v) for v in consumer.poll(500, max_records=4 - taken).values())
    consumer.commit()
    consumer.close()

    result = run(
        ["status", "--json"], {"KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers}
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    [mine] = [t for t in status["topics"] if t["name"] == topic]
    assert mine["end_offset"] == 10
    [g] = [g for g in status["groups"] if g["group_id"] == group]
    assert g["lag"] == 6

    table = run(["status"], {"KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers})
    assert group in table.stdout


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["status"], {"KAFKA_BOOTSTRAP_SERVERS": "not-an-address"}, "is not host:port"),
        (["status"], {"RAFTLOOP_MODE": "staging"}, "RuntimeSettings.mode"),
        (["status"], {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "no Kafka broker answered"),
        (["up"], {"RAFTLOOP_SERVICES": "nonesuch"}, "unknown or not installed service"),
    ],
)
def test_bad_input_gives_one_clear_line(
    args: list[str], env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    result = run(args, {"RAFTLOOP_DATA_DIR": str(tmp_path), **env})
    assert result.returncode == 2
    lines = error_lines(result)
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_broker_port_in_use_gives_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(["broker", "--port", str(port)], {"RAFTLOOP_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    [line] = error_lines(result)
    assert f"port {port} on 127.0.0.1 is already in use" in line


def test_up_runs_the_broker_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    platform = Platform.start(tmp_path, only="broker", timeout_s=120)
    try:
        with socket.create_connection(("127.0.0.1", int(platform.env["RAFTLOOP_BROKER_PORT"])), 2):
            pass
        assert (platform.data_dir / "credentials.json").exists()
    except BaseException:
        platform.kill()
        raise
    platform.stop()  # Ctrl-C: exit 0 and no child left


@pytest.mark.e2e
def test_up_runs_every_installed_service_healthy_and_stops_cleanly(tmp_path: Path) -> None:
    specs = installed_services()
    if not specs:
        pytest.skip("no service package is installed")
    platform = Platform.start(tmp_path, timeout_s=600)
    try:
        for spec in specs:
            response = httpx.get(f"{platform.url(spec.name)}/healthz", timeout=5)
            assert response.status_code == 200, spec.name
        assert "demo handbook" in platform.output()  # seeded on a development platform
    except BaseException:
        platform.kill()
        raise
    shutdown = platform.stop()  # Ctrl-C: exit 0 and no process left
    print("gone (s after Ctrl-C):", ", ".join(f"{w} {t:.1f}" for t, w in shutdown.exited))
    assert shutdown.seconds < 10, shutdown.lines[-40:]
    assert len(shutdown.lines) < 200, shutdown.lines[-40:]
    for spec in specs:  # the services first, the broker last (#18)
        assert shutdown.gone_at(spec.name) <= shutdown.gone_at("broker"), spec.name
