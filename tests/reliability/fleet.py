"""The loop's services as separate processes that a test may kill -9 and restart one by one.

`raftloop up` stops everything when one child dies, so the fault tests run each service with
the same command line `raftloop up` uses (`python -m uvicorn --factory raftloop_<svc>.main:build`)
and the same wiring (`service_urls()`), on a private broker, data folder and free ports. API keys
come from a keys file with two tenants, so cross-tenant access can be probed.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from raftloop_cli.testing import TEST_KAFKA
from raftloop_core.credentials import hash_key
from raftloop_core.embedded import DEFAULT_STORAGE, EmbeddedBroker, free_port
from raftloop_core.messaging import ensure_topics
from raftloop_core.settings import KafkaSettings

NAMES = ("rag", "ingest", "gateway", "judge", "hitl", "trainer")
# caller -> (tenant, role) of the keys file the fleet writes.
KEYS = {
    "client": ("default", "client"),
    "internal": ("default", "internal"),
    "admin": ("default", "admin"),
    "other tenant": ("other", "client"),
    "other admin": ("other", "admin"),
    # The two-tenant suite's tenants (issue #17), one key per role each.
    **{f"{t} {r}": (t, r) for t in ("acme", "globex") for r in ("client", "internal", "admin")},
}
QUIET = {"RAFTLOOP_LOG_LEVEL": "INFO"}
LOOP = ("ingest", "gateway", "judge", "hitl")
ALL = ("rag", *LOOP, "trainer")
SETTINGS = {
    # Short answers and the tiny Llama keep the CPU cost of every interaction low.
    "GATEWAY_DEFAULT_MAX_TOKENS": "8",
    "GATEWAY_MAX_TOKENS_LIMIT": "16",
    "GATEWAY_MAX_QUEUE": "64",
    "JUDGE_MAX_TOKENS": "8",
    "JUDGE_CRITERIA": '["correctness"]',
    "JUDGE_CONCURRENCY": "2",
    "JUDGE_INVALID_OUTPUT_ATTEMPTS": "1",
    "JUDGE_MAX_RETRIES": "1",
    "KAFKA_MAX_MESSAGE_BYTES": "262144",  # oversize test messages stay small for the broker
    # The trainer keeps the curated dataset; the suite never trains (the e2e test does).
    "TRAINER_AUTO_TRAIN": "false",
}


@dataclass
class Service:
    """One service process: started, killed with SIGKILL and restarted by the test."""

    name: str
    port: int
    env: dict[str, str]
    log: Path
    ready_path: str = "/healthz"
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process (uvicorn, as `raftloop up` runs it)."""
        cmd = [sys.executable, "-m", "uvicorn", "--factory", f"raftloop_{self.name}.main:build"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.starts += 1

    def wait_ready(self, timeout_s: float = 300) -> None:
        """Block until the service answers its readiness path."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-4000:]
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            if self._answers():
                return
            time.sleep(0.3)
        raise AssertionError(f"{self.name} not ready in {timeout_s:.0f} s")

    def _answers(self) -> bool:
        """Its readiness path answers 200, and `/healthz` names this service.

        Another process on its port (a port handed out twice) would answer the readiness path
        while this one failed to bind and exited.
        """
        try:
            if httpx.get(self.url + self.ready_path, timeout=2).status_code != 200:
                return False
            health = httpx.get(self.url + "/healthz", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        return isinstance(health, dict) and health.get("service") == self.name

    def kill9(self) -> None:
        """SIGKILL: no shutdown hook, no offset commit, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def crash_at(self, point: str, folder: Path, timeout_s: float = 60) -> bool:
        """Arm failpoint `point` and wait for the process to kill itself there.

        True when it died by the failpoint (SIGKILL right after a database write, before the
        offset commit); False when the flow did not reach the point in time, and then the
        process is killed with SIGKILL here instead.
        """
        assert self.proc is not None
        trigger = folder / point
        trigger.touch()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            trigger.unlink(missing_ok=True)
            self.kill9()
            return False
        return self.proc.returncode == -signal.SIGKILL and not trigger.exists()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill9()


@dataclass
class Fleet:
    """A private broker and the services of the loop, each its own process."""

    folder: Path
    broker: EmbeddedBroker
    kafka: KafkaSettings
    keys: dict[str, str]
    services: dict[str, Service] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        folder: Path,
        names: tuple[str, ...],
        extra_env: dict[str, str],
        *,
        storage: str = DEFAULT_STORAGE,
    ) -> Fleet:
        """Start the broker, create the topics, then start `names` in the given order."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "logs").mkdir(exist_ok=True)
        (folder / "failpoints").mkdir(exist_ok=True)
        broker = EmbeddedBroker(
            port=free_port(), storage=storage, log_path=folder / "logs" / "broker.log"
        ).start()
        kafka = KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            session_timeout_ms=int(TEST_KAFKA["KAFKA_SESSION_TIMEOUT_MS"]),
            heartbeat_interval_ms=int(TEST_KAFKA["KAFKA_HEARTBEAT_INTERVAL_MS"]),
        )
        ensure_topics(kafka)
        keys = {caller: f"rl-{secrets.token_urlsafe(24)}" for caller in KEYS}
        keys_file = folder / "keys.json"
        keys_file.write_text(
            json.dumps(
                [
                    {
                        "key_id": caller.replace(" ", "-"),
                        "key_sha256": hash_key(keys[caller]),
                        "tenant": tenant,
                        "role": role,
                        # The platform's own key, as deploy/make_secrets.py writes it.
                        **({"tenants": ["*"]} if caller == "internal" else {}),
                    }
                    for caller, (tenant, role) in KEYS.items()
                ]
            )
        )
        ports = {name: free_port() for name in NAMES}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(
                ("KAFKA_", "GATEWAY_", "JUDGE_", "HITL_", "INGEST_", "RAG_", "TRAINER_")
            )
            and k not in ("DATABASE_URL", "RAFTLOOP_API_KEYS_FILE")
        }
        env = {
            **inherited,
            **TEST_KAFKA,
            **QUIET,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "RAFTLOOP_DATA_DIR": str(folder / "var"),
            "RAFTLOOP_API_KEYS_FILE": str(keys_file),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            **{f"{n.upper()}_PORT": str(p) for n, p in ports.items()},
            **{f"RAFTLOOP_{n.upper()}_URL": u for n, u in urls.items()},
            "JUDGE_ENDPOINT_URL": f"{urls['gateway']}/v1",
            "JUDGE_ENDPOINT_API_KEY": keys["internal"],
            "RAFTLOOP_FAILPOINTS_DIR": str(folder / "failpoints"),
            **extra_env,
        }
        fleet = cls(folder, broker, kafka, keys)
        try:
            for name in names:
                service = Service(
                    name,
                    ports[name],
                    env,
                    folder / "logs" / f"{name}.log",
                    ready_path="/readyz" if name == "gateway" else "/healthz",
                )
                fleet.services[name] = service
                service.start()
                service.wait_ready()
        except BaseException:
            fleet.stop()
            raise
        return fleet

    @property
    def failpoints(self) -> Path:
        """The folder whose files arm the services' failpoints (`raftloop_core.faults`)."""
        return self.folder / "failpoints"

    def url(self, name: str) -> str:
        """Base URL of one service."""
        return self.services[name].url

    def restart(self, name: str) -> None:
        """Start a killed service again and wait until it is ready."""
        service = self.services[name]
        service.start()
        service.wait_ready()

    def restart_broker(self, down_s: float = 0.0) -> None:
        """Kill -9 the broker, wait `down_s`, and start it again on the same port and storage."""
        if self.broker.proc is not None:
            self.broker.proc.kill()
            self.broker.proc.wait(30)
        time.sleep(down_s)
        self.broker = EmbeddedBroker(
            port=self.broker.port, storage=self.broker.storage, log_path=self.broker.log_path
        ).start()

    def logs(self) -> dict[str, str]:
        """Every service log so far."""
        return {n: s.log.read_text(errors="replace") for n, s in self.services.items()}

    def stop(self) -> None:
        """Stop every service, then the broker."""
        for service in reversed(list(self.services.values())):
            service.stop()
        self.broker.stop()


def read_topic(kafka: KafkaSettings, topic: str, timeout_s: float = 60) -> list[bytes]:
    """Every record value on `topic`, from the beginning to the current end offsets."""
    from kafka import KafkaConsumer, TopicPartition

    from raftloop_core.ops import end_offsets

    consumer = KafkaConsumer(
        bootstrap_servers=kafka.servers, group_id=None, enable_auto_commit=False
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        marks = end_offsets(kafka, {topic: len(partitions)})
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < marks.get((topic, tp.partition), 0) for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end in {timeout_s:.0f} s")
            for batch in consumer.poll(timeout_ms=200, max_records=5000).values():
                values += [r.value for r in batch if r.value is not None]
        return values
    finally:
        consumer.close()


def group_lag(kafka: KafkaSettings, group: str, topic: str) -> int:
    """Messages on `topic` that consumer group `group` has not committed yet."""
    from raftloop_core.ops import group_status

    for status in group_status(kafka):
        if status.group_id == group:
            return sum(p.lag for p in status.partitions if p.topic == topic)
    return -1  # the group committed nothing yet


def decoded(values: list[bytes]) -> list[dict[str, Any]]:
    """The JSON objects among `values` (anything else is skipped)."""
    out = []
    for value in values:
        try:
            obj = json.loads(value)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out
