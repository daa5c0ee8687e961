"""The `raftloop` program as a user runs it: real processes, the real broker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from raftloop_cli.services import SERVICES, installed_services
from raftloop_core.embedded import free_port
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


def up_env(tmp_path: Path, only: str | None) -> dict[str, str]:
    env = {
        "RAFTLOOP_DATA_DIR": str(tmp_path / "var"),
        "RAFTLOOP_BROKER_PORT": str(free_port()),
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    for spec in SERVICES:
        env[spec.port_env] = str(free_port())
    if only is not None:
        env["RAFTLOOP_SERVICES"] = only
    return env


def start_up(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    return subprocess.Popen(
        [*RAFTLOOP, "up"],
        env={**clean, **env},
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )


def wait_for_line(proc: subprocess.Popen[bytes], log: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"raftloop up exited early:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in time:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


def stop_and_check_nothing_is_left(proc: subprocess.Popen[bytes], log: Path) -> None:
    descendants = psutil.Process(proc.pid).children(recursive=True)
    assert descendants, "up started no child process"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, log.read_text()[-4000:]
    _gone, alive = psutil.wait_procs(descendants, timeout=5)
    assert not alive, f"left running: {[p.pid for p in alive]}"


def test_up_runs_the_broker_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    env = up_env(tmp_path, only="broker")
    log = tmp_path / "up.log"
    proc = start_up(env, log)
    try:
        wait_for_line(proc, log, "raftloop is up", timeout_s=120)
        with socket.create_connection(("127.0.0.1", int(env["RAFTLOOP_BROKER_PORT"])), 2):
            pass
        assert (tmp_path / "var" / "credentials.json").exists()
        stop_and_check_nothing_is_left(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.e2e
def test_up_runs_every_installed_service_healthy_and_stops_cleanly(tmp_path: Path) -> None:
    specs = installed_services()
    if not specs:
        pytest.skip("no service package is installed")
    env = up_env(tmp_path, only=None)
    log = tmp_path / "up.log"
    proc = start_up(env, log)
    try:
        wait_for_line(proc, log, "raftloop is up", timeout_s=600)
        for spec in specs:
            url = f"http://127.0.0.1:{env[spec.port_env]}/healthz"
            assert httpx.get(url, timeout=5).status_code == 200, spec.name
        stop_and_check_nothing_is_left(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
