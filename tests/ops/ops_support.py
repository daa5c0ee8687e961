"""The six services as real processes on a private embedded broker, for the telemetry tests.

Each service runs as in production: `uvicorn --factory raftloop_<svc>.main:build` with JSON logs
to its own file. They share one data folder (one set of development credentials, as under
`raftloop up`), listen on free ports, and use a Tansu broker of their own, which the readiness
test stops and restarts on the same port.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.embedded import EmbeddedBroker, free_port
from raftloop_core.messaging import ensure_topics
from raftloop_core.settings import RuntimeSettings
from raftloop_core.testing import (
    spawn_service,
    stop_service,
    test_kafka_settings,
    uvicorn_command,
    wait_ready,
)

# Start order: rag before the gateway (retrieval), the gateway before the judge (its endpoint).
ORDER = ("rag", "ingest", "gateway", "judge", "hitl", "trainer")


@dataclass
class Service:
    """One service process."""

    name: str
    url: str
    log: Path
    proc: subprocess.Popen[bytes]

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=10, **kwargs)

    def ready(self) -> tuple[int, dict[str, Any]]:
        try:
            response = self.get("/readyz")
        except httpx.HTTPError as exc:
            return 0, {"error": repr(exc)}
        return response.status_code, response.json()

    def metrics(self) -> dict[str, Metric]:
        """Metric families by name, as the Prometheus text parser reads them."""
        text = self.get("/metrics").text
        return {family.name: family for family in text_string_to_metric_families(text)}

    def log_records(self) -> list[dict[str, Any]]:
        """Every JSON line of the service's log (startup lines of other formats skipped)."""
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return records

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        stop_service(self.proc, timeout_s=20)


@dataclass
class OpsPlatform:
    """The broker, the services and the development keys."""

    folder: Path
    broker: EmbeddedBroker
    keys: dict[str, str]
    services: dict[str, Service] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def stop(self) -> None:
        for name in reversed(ORDER):
            if name in self.services:
                self.services[name].stop()
        self.broker.stop()


def service_env(ports: Mapping[str, int], base: Mapping[str, str]) -> dict[str, str]:
    """What `raftloop up` would give this service, on the test's ports."""
    urls = {svc: f"http://127.0.0.1:{port}" for svc, port in ports.items()}
    env = dict(base) | {f"{svc.upper()}_PORT": str(port) for svc, port in ports.items()}
    env |= {f"RAFTLOOP_{svc.upper()}_URL": url for svc, url in urls.items()}
    env |= {
        "GATEWAY_RAG_URL": urls["rag"],
        "GATEWAY_ALIAS_POLL_S": "600",
        "GATEWAY_DEFAULT_MAX_TOKENS": "12",
        # The judge asks the gateway (its default endpoint) for one criterion, briefly.
        "JUDGE_ENDPOINT_URL": f"{urls['gateway']}/v1",
        "JUDGE_CRITERIA": '["helpfulness"]',
        "JUDGE_MAX_TOKENS": "16",
        "JUDGE_REQUEST_TIMEOUT_S": "300",
        "HITL_OPS_REFRESH_S": "1",
        "HITL_OPS_CACHE_S": "0.5",
        "HITL_OUTBOX_POLL_S": "0.2",
        "TRAINER_AUTO_TRAIN": "false",
        "TRAINER_RAG_URL": urls["rag"],
    }
    return env


def start_platform(folder: Path, *, timeout_s: float = 420) -> OpsPlatform:
    """Start the broker and every service; return once each answers /readyz with 200."""
    broker = EmbeddedBroker(port=free_port(), log_path=folder / "tansu.log").start()
    kafka = test_kafka_settings(broker.bootstrap_servers)
    ensure_topics(kafka)  # as `raftloop up` does before it starts the services
    data = folder / "var"
    keys = ensure_dev_credentials(RuntimeSettings(data_dir=data)).api_keys
    platform = OpsPlatform(folder, broker, keys)
    ports = {name: free_port() for name in ORDER}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "RAFTLOOP_"))}
    base |= {
        "RAFTLOOP_DATA_DIR": str(data),
        "RAFTLOOP_LOG_FORMAT": "json",
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KAFKA_SESSION_TIMEOUT_MS": str(kafka.session_timeout_ms),
        "KAFKA_HEARTBEAT_INTERVAL_MS": str(kafka.heartbeat_interval_ms),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    try:
        for name in ORDER:
            log = folder / f"{name}.log"
            command = uvicorn_command(f"raftloop_{name}.main:build", ports[name], access_log=False)
            proc = spawn_service(command, env=service_env(ports, base), log=log, cwd=folder)
            platform.services[name] = Service(name, f"http://127.0.0.1:{ports[name]}", log, proc)
        for service in platform.services.values():
            ready = f"{service.url}/readyz"
            wait_ready(service.proc, ready, log=service.log, timeout_s=timeout_s, name=service.name)
    except BaseException:
        platform.stop()
        raise
    return platform


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    detail: Callable[[], str] | None = None,
) -> None:
    """Poll `predicate` until it holds; fail with `what` (and `detail()`) when time runs out."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{detail() if detail else ''}")
        time.sleep(0.3)


def lines_about(service: Service, interaction_id: str) -> list[dict[str, Any]]:
    """The service's log records that carry this interaction id."""
    return [r for r in service.log_records() if r.get("interaction_id") == interaction_id]


def samples(families: Mapping[str, Metric], name: str, **labels: str) -> list[Sample]:
    """Samples named `name` (a sample name, e.g. `x_total`) whose labels include `labels`."""
    return [
        sample
        for family in families.values()
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def total(families: Mapping[str, Metric], name: str, **labels: str) -> float:
    """The sum of the matching samples' values."""
    return sum(s.value for s in samples(families, name, **labels))
