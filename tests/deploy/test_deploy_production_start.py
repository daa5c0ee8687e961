"""hitl and ingest start in production mode with the compose stack's own environment.

No Docker engine runs here, so the containers' processes are started on this machine instead:
the same `uvicorn --factory` command and the same environment that `docker-compose config`
renders, with only the infrastructure swapped for what this machine has (the test session's
Kafka-protocol broker, the local PostgreSQL, a temporary data folder and keys file). The
embedded broker has no idempotent producers and one node, so those two Kafka settings are the
embedded ones; everything else (production mode, the secrets, the keys file, PostgreSQL through
psycopg) is what the containers get.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from deploy_tools import render_compose, write_test_env
from prometheus_client.parser import text_string_to_metric_families

from raftloop_core.credentials import hash_key
from raftloop_core.embedded import free_port
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import missing, require_module, spawn_service, stop_service

pytestmark = pytest.mark.integration

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server."""
    psycopg = require_module("psycopg", "pip install 'psycopg[binary]'")
    name = f"deploy_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True)
    except psycopg.OperationalError as exc:
        missing(f"PostgreSQL at 127.0.0.1:5432 ({exc})", "start PostgreSQL 15 (trust auth)")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield f"{PG}/{name}"
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.mark.parametrize("svc", ["hitl", "ingest", "judge", "trainer"])
def test_service_starts_ready_in_production_with_the_compose_environment(
    svc: str, tmp_path: Path, kafka_settings: KafkaSettings, database: str
) -> None:
    spec = render_compose(write_test_env(tmp_path))["services"][svc]
    internal, scraper = ("rl-" + uuid.uuid4().hex * 2 for _ in range(2))
    keys = tmp_path / "api-keys.json"
    keys.write_text(
        json.dumps(
            [
                {"key_id": "i", "key_sha256": hash_key(internal), "role": "internal"},
                {"key_id": "m", "key_sha256": hash_key(scraper), "role": "metrics"},
            ]
        )
    )
    env = dict(spec["environment"]) | {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "KAFKA_REPLICATION_FACTOR": "1",
        "DATABASE_URL": database,
        "RAFTLOOP_DATA_DIR": str(tmp_path / "data"),
        "RAFTLOOP_API_KEYS_FILE": str(keys),
        "PATH": str(Path(sys.executable).parent),
    }
    assert env["RAFTLOOP_MODE"] == "production"
    port = free_port()
    command = [sys.executable, "-m", *spec["command"]]
    command[command.index("--port") + 1] = str(port)
    command[command.index("--host") + 1] = "127.0.0.1"
    log = tmp_path / "service.log"
    base = f"http://127.0.0.1:{port}"
    proc = spawn_service(
        command, env=env, log=log, ready_url=f"{base}/readyz", timeout_s=90, cwd=tmp_path
    )
    try:
        url = f"{base}/metrics"
        assert httpx.get(url, timeout=5).status_code == 401  # production protects /metrics
        auth = {"Authorization": f"Bearer {scraper}"}  # what Prometheus sends
        metrics = httpx.get(url, headers=auth, timeout=5).text
        names = {family.name for family in text_string_to_metric_families(metrics)}
        assert "raftloop_http_request_seconds" in names
        assert not (tmp_path / "data" / "credentials.json").exists()
    finally:
        stop_service(proc, timeout_s=30)


@pytest.mark.parametrize(
    ("svc", "secret"), [("hitl", "HITL_SESSION_SECRET"), ("ingest", "INGEST_PII_HASH_KEY")]
)
def test_service_refuses_production_without_its_secret(
    svc: str, secret: str, tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    spec = render_compose(write_test_env(tmp_path))["services"][svc]
    keys = tmp_path / "api-keys.json"
    keys.write_text("[]")
    env = {k: v for k, v in spec["environment"].items() if k != secret} | {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "RAFTLOOP_DATA_DIR": str(tmp_path / "data"),
        "RAFTLOOP_API_KEYS_FILE": str(keys),
        "PATH": str(Path(sys.executable).parent),
    }
    done = subprocess.run(
        [sys.executable, "-m", *spec["command"]],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert secret in done.stderr
    assert not (tmp_path / "data" / "credentials.json").exists()
