"""The platform for the pipeline benchmark: broker, stub model endpoints and five real services.

Each service runs as `raftloop up` runs it (`python -m raftloop_cli.serve <factory>`) on a private
embedded broker, with one shared data folder. What is not ours is stubbed: one raw-ASGI process
(as bench_gateway's upstream stub) answers both the gateway's upstream (`/upstream/v1`, a fixed
chat answer) and the judge's endpoint (`/judge/v1`, a rubric score of 5 with logprobs). rag is
left out: without `GATEWAY_RAG_URL` the gateway answers without retrieval. The API keys file
gives the load generator's client key limits far above the load, and the judge's store is
seeded with a calibrator (as after its first reviewer labels), so that the judge states an
approval probability and hitl can auto-accept.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from raftloop_core.credentials import hash_key
from raftloop_core.embedded import EmbeddedBroker, free_port
from raftloop_core.messaging import ensure_topics
from raftloop_core.settings import KafkaSettings, RuntimeSettings
from raftloop_core.testing import spawn_service, stop_service, wait_ready

SERVICES = ("ingest", "gateway", "judge", "hitl", "trainer")
STUB_MODEL = "stub"
CHAT_ANSWER = "Refunds take five business days after we receive the returned item."
SCORE_TOP = ((5, 0.9), (4, 0.1))  # the judge stub's score distribution: confident, approving

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


# ---------------------------------------------------------------- the stub endpoints


def _completion(content: str, logprobs: list[dict[str, Any]] | None) -> bytes:
    choice: dict[str, Any] = {
        "index": 0,
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": content},
    }
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return json.dumps(
        {
            "id": "stub",
            "object": "chat.completion",
            "created": 0,
            "model": STUB_MODEL,
            "choices": [choice],
            "usage": {"prompt_tokens": 12, "completion_tokens": 12, "total_tokens": 24},
        }
    ).encode()


def _judge_reply() -> bytes:
    """A rubric reply whose score token carries top logprobs (G-Eval reads the distribution)."""
    top = [{"token": str(s), "logprob": math.log(p), "bytes": None} for s, p in SCORE_TOP]
    tokens = [("{", -0.01), ('"score', -0.01), ('":', -0.01), (" ", -0.01), ("5", math.log(0.9))]
    content = [
        {"token": t, "logprob": lp, "bytes": None, "top_logprobs": top if t == "5" else []}
        for t, lp in tokens
    ]
    return _completion('{"score": 5, "rationale": "answers the question"}', content)


def stub_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The raw ASGI stub: no framework, so that its CPU cost per request stays small."""
    models = json.dumps(
        {
            "object": "list",
            "data": [{"id": STUB_MODEL, "object": "model", "created": 0, "owned_by": "bench"}],
        }
    )
    replies = {
        "models": models.encode(),
        "judge": _judge_reply(),
        "chat": _completion(CHAT_ANSWER, None),
    }

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = bool((await receive()).get("more_body", False))
        path = str(scope["path"])
        kind = "models" if path.endswith("/models") else "judge" if "/judge/" in path else "chat"
        body = replies[kind]
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def stub_main(port: int) -> None:
    """Serve the stub (run as `python bench/pipeline_stack.py --stub PORT`)."""
    import uvicorn

    uvicorn.run(stub_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---------------------------------------------------------------- setup on disk


def write_keys(path: Path) -> dict[str, str]:
    """A keys file with one key per role; the client key's limits are far above any load."""
    keys = {
        role: f"bench-{role}-{secrets.token_urlsafe(16)}"
        for role in ("client", "internal", "admin")
    }
    rows: list[dict[str, Any]] = []
    for role, key in keys.items():
        row: dict[str, Any] = {"key_id": f"bench-{role}", "key_sha256": hash_key(key), "role": role}
        row |= {"requests_per_minute": 10**8, "tokens_per_minute": 10**10}
        if role == "internal":
            row["tenants"] = ["*"]
        rows.append(row)
    path.write_text(json.dumps(rows))
    path.chmod(0o600)
    return keys


def seed_calibrator(data: Path) -> None:
    """Give the judge a fitted calibrator: approval rises steeply with the overall score.

    A fresh judge states no approval probability until reviewers have labelled
    `JUDGE_CALIBRATION_MIN_LABELS` items, and hitl sends every unscored item to a human. This
    is the calibrator of a judge that has been running for a while.
    """
    from raftloop_judge.calibration import Calibrator
    from raftloop_judge.settings import JudgeSettings
    from raftloop_judge.store import SqlJudgeStore

    calibrator = Calibrator(
        names=["overall"], mean=[3.0], scale=[1.0], coef=[3.0], intercept=0.0, n=200
    )
    settings = JudgeSettings(runtime=RuntimeSettings(data_dir=data))
    store = SqlJudgeStore(settings.database_url())
    try:
        store.save_calibrator(calibrator.to_json())
    finally:
        store.close()


# ---------------------------------------------------------------- the running stack


@dataclass
class Stack:
    """The broker, the stub and the services, with the keys to call them."""

    folder: Path
    broker: EmbeddedBroker
    kafka: KafkaSettings
    keys: dict[str, str]
    urls: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def auth(self, role: str) -> dict[str, str]:
        """The Authorization header of a role's key."""
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def metrics(self, service: str) -> dict[str, float]:
        """A service's Prometheus samples: `name{label=value,...}` -> value."""
        text = httpx.get(
            f"{self.urls[service]}/metrics", headers=self.auth("admin"), timeout=10
        ).text
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}"] = s.value
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) each process has used so far, the broker's included."""
        pids = {name: proc.pid for name, proc in self.procs.items()}
        if self.broker.proc is not None:
            pids["broker"] = self.broker.proc.pid
        out = {}
        for name, pid in pids.items():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    def log_tail(self, service: str, lines: int = 20) -> str:
        """The last lines of a process's log."""
        text = (self.folder / f"{service}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the services (newest first), then the stub and the broker."""
        for name, proc in reversed(self.procs.items()):
            if stop_service(proc, timeout_s=20):
                print(f"{name} did not stop in 20 s; killed it", flush=True)
        self.broker.stop()


def _spawn(stack: Stack, name: str, command: list[str], env: dict[str, str]) -> None:
    log = stack.folder / f"{name}.log"
    stack.procs[name] = spawn_service(command, env=env, log=log, cwd=stack.folder)


def _service_env(stack: Stack, base: dict[str, str], ports: dict[str, int]) -> dict[str, str]:
    """What `raftloop up` gives each service, with the stubs as the model endpoints."""
    env = base | {f"{svc.upper()}_PORT": str(port) for svc, port in ports.items()}
    env |= {f"RAFTLOOP_{svc.upper()}_URL": stack.urls[svc] for svc in SERVICES}
    return env | {
        "GATEWAY_BACKEND": "upstream",
        "GATEWAY_UPSTREAM_URL": f"{stack.urls['stub']}/upstream/v1",
        "GATEWAY_UPSTREAM_MODEL": STUB_MODEL,
        # Admission beyond the default 16 + 16: the load generator keeps up to 128 in flight.
        "GATEWAY_MAX_CONCURRENCY": "256",
        "GATEWAY_MAX_QUEUE": "1024",
        "JUDGE_ENDPOINT_URL": f"{stack.urls['stub']}/judge/v1",
        "JUDGE_MODEL": STUB_MODEL,
        "TRAINER_AUTO_TRAIN": "false",
    }


def _base_env(stack: Stack, data: Path) -> dict[str, str]:
    """The environment every process shares: data folder, keys, broker, offline models."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "RAFTLOOP_"))}
    return base | {
        "RAFTLOOP_DATA_DIR": str(data),
        "RAFTLOOP_LOG_FORMAT": "json",
        "RAFTLOOP_API_KEYS_FILE": str(stack.folder / "keys.json"),
        "KAFKA_BOOTSTRAP_SERVERS": stack.broker.bootstrap_servers,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONUNBUFFERED": "1",
    }


def start_stack(folder: Path, *, timeout_s: float = 300) -> Stack:
    """Start the broker, the stub and every service; return once each is ready."""
    broker = EmbeddedBroker(port=free_port(), log_path=folder / "tansu.log").start()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
    ensure_topics(kafka)  # as `raftloop up` does before it starts the services
    data = folder / "var"
    data.mkdir(parents=True, exist_ok=True)
    stack = Stack(folder, broker, kafka, write_keys(folder / "keys.json"))
    try:
        seed_calibrator(data)
        ports = {name: free_port() for name in ("stub", *SERVICES)}
        stack.urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        base = _base_env(stack, data)
        _spawn(stack, "stub", [sys.executable, __file__, "--stub", str(ports["stub"])], base)
        env = _service_env(stack, base, ports)
        for name in SERVICES:
            serve = ["-m", "raftloop_cli.serve", f"raftloop_{name}.main:build"]
            address = ["--host", "127.0.0.1", "--port", str(ports[name])]
            _spawn(stack, name, [sys.executable, *serve, *address], env)
        for name in SERVICES:
            url, log = f"{stack.urls[name]}/readyz", stack.folder / f"{name}.log"
            wait_ready(stack.procs[name], url, log=log, timeout_s=timeout_s, name=name)
    except BaseException:
        stack.stop()
        raise
    return stack


def enable_auto_accept(stack: Stack) -> dict[str, Any]:
    """Route every confident, unflagged judgement straight into the dataset (no humans).

    Audits are off, so that each interaction reaches the trainer and the counts compare; the
    uncertainty bound allows for the reference evaluators' disagreement with the rubric score
    (the stub scores every answer 5).
    """
    url, headers = f"{stack.urls['hitl']}/api/v1/routing", stack.auth("admin")
    policy: dict[str, Any] = httpx.get(url, headers=headers, timeout=10).raise_for_status().json()
    policy |= {
        "auto_accept": True,
        "auto_accept_above": 0.95,
        "audit_rate": 0.0,
        "uncertainty_above": 2.0,
    }
    httpx.put(url, headers=headers, json=policy, timeout=10).raise_for_status()
    return policy


if __name__ == "__main__" and sys.argv[1:2] == ["--stub"]:
    stub_main(int(sys.argv[2]))
