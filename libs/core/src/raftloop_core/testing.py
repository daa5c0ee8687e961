"""Pytest plugin shared by every package's tests: one real broker per session, sample events.

Loaded from the root `conftest.py`. The broker is the embedded Tansu binary on a free port,
unless `RAFTLOOP_TEST_KAFKA` names an external cluster. `spawn_service` and `stop_service` are
the one way tests and benchmarks start a service process, wait for it and stop it (#19).
"""

from __future__ import annotations

import functools
import http.client
import importlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import pytest

from raftloop_core import events as ev
from raftloop_core.embedded import EmbeddedBroker, free_port
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import Topic

if TYPE_CHECKING:  # services' test environments have httpx; the core library does not need it
    import httpx

ADAPTER = "a" * 64


def plan_examples(n: int, *, base_model: str, tenant: str = "default") -> list[ev.ExampleCurated]:
    """`n` distinct approved examples about plan prices, each answer inside its oracle chunk.

    Distinct because the trainer's store drops duplicates; data a trainer test can train on.
    """
    out = []
    for i in range(n):
        answer = f"Plan {i} costs {i + 3} dollars."
        out.append(
            ev.ExampleCurated(
                tenant=tenant,
                example_id=uuid4(),
                interaction_id=uuid4(),
                source="approved",
                messages=[ev.ChatMessage(role="user", content=f"What does plan {i} cost?")],
                question=f"What does plan {i} cost?",
                answer=answer,
                oracle_chunks=[
                    ev.RetrievedChunk(
                        chunk_id=f"pricing#{i}",
                        document_id="pricing",
                        text=f"Our catalogue lists many plans. {answer} Taxes are extra.",
                        score=0.8,
                    )
                ],
                base_model=base_model,
            )
        )
    return out


def missing(what: str, install: str) -> None:
    """A test needs `what`, which this machine lacks: skip locally, fail in CI.

    On a developer's machine a missing validator or database is a reason to skip; in CI
    (`CI=true`) the run installs and starts everything, so a missing part is a broken install
    step, and a skip would hide it behind a green run.
    """
    message = f"{what} is missing; {install}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{message} (CI=true: a missing part fails the run)", pytrace=False)
    pytest.skip(message)


def require_module(name: str, install: str) -> Any:
    """`import name`, or `missing(...)` (skip locally, fail in CI)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the Python module {name}", install)
        raise  # unreachable: missing() raises


def test_kafka_settings(bootstrap_servers: str) -> KafkaSettings:
    """Settings tuned for tests: short group joins (Tansu takes about half the session timeout)."""
    return KafkaSettings(
        bootstrap_servers=bootstrap_servers,
        session_timeout_ms=3_000,
        heartbeat_interval_ms=1_000,
        retry_backoff_s=0.05,
        retry_backoff_max_s=0.5,
        retry_max_attempts=4,
    )


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of the session's real Kafka-protocol broker."""
    external = os.environ.get("RAFTLOOP_TEST_KAFKA")
    if external:
        yield external
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(port=free_port(), log_path=log) as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_settings(kafka_broker: str) -> KafkaSettings:
    """KafkaSettings pointing at the session broker."""
    return test_kafka_settings(kafka_broker)


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Make unique topic, group and collection names so tests never share state."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


TEST_POSTGRES = os.environ.get(
    "RAFTLOOP_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
"""The PostgreSQL database the tests use (CI's and a developer's machine run one locally)."""


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database for `raftloop_core.db.make_engine`, once of each kind.

    A SQLite file, or a PostgreSQL schema of its own (dropped afterwards): a store test that
    takes it runs on both.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite3'}"
        return
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(TEST_POSTGRES)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {TEST_POSTGRES} ({exc.orig}); start it or "
            "set RAFTLOOP_TEST_POSTGRES"
        )
    yield f"{TEST_POSTGRES}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def sample_events() -> dict[Topic, ev.Event]:
    """One realistic event of every type, keyed by its topic."""
    interaction_id = uuid4()
    chunk = ev.RetrievedChunk(
        chunk_id="doc-1#0",
        document_id="doc-1",
        text="Refunds take 5 days.",
        score=0.81,
        title="Refunds",
        source="kb/refunds.md",
        chunk_index=0,
    )
    messages = [
        ev.ChatMessage(role="system", content="You are helpful."),
        ev.ChatMessage(role="user", content="How long do refunds take?"),
    ]
    feedback = ev.Feedback(feedback_id=uuid4(), rating=-1, correction="Five business days.")
    interaction = ev.Interaction(
        interaction_id=interaction_id,
        conversation_id="conv-1",
        key_id="key-1",
        model="smollm2",
        base_model="smollm2-135m",
        adapter_id=ADAPTER,
        messages=messages,
        answer="About a week.",
        retrieved=[chunk],
        feedback=feedback,
        pii_types=["EMAIL"],
        flags=[ev.Flag(code="prompt_injection", reason="asks to ignore instructions")],
        question_hash="h1",
        answered_at=datetime.now(UTC),
    )
    judgement = ev.Judgement(
        judge_version="rubric-v1",
        overall=3.5,
        uncertainty=0.4,
        approval_probability=0.6,
        scores=[ev.CriterionScore(criterion="correctness", score=3.0, spread=0.5)],
    )
    return {
        Topic.CHAT_COMPLETED: ev.ChatCompleted(
            interaction_id=interaction_id,
            conversation_id="conv-1",
            key_id="key-1",
            model="smollm2",
            base_model="smollm2-135m",
            adapter_id=ADAPTER,
            messages=messages,
            answer="About a week.",
            finish_reason="stop",
            retrieved=[chunk],
            params=ev.GenerationParams(max_tokens=64, temperature=0.0, stop=["\n\n"]),
            usage=ev.TokenUsage(prompt_tokens=20, completion_tokens=5),
            latency_ms=120.5,
            metadata={"app": "support"},
        ),
        Topic.CHAT_FEEDBACK: ev.FeedbackReceived(
            interaction_id=interaction_id, key_id="key-1", feedback=feedback
        ),
        Topic.INTERACTION_INGESTED: ev.InteractionIngested(
            interaction=interaction, source_event_id=uuid4()
        ),
        Topic.INTERACTION_JUDGED: ev.InteractionJudged(
            interaction=interaction, judgement=judgement, ingested_event_id=uuid4()
        ),
        Topic.REVIEW_COMPLETED: ev.ReviewCompleted(
            review_id=uuid4(),
            interaction_id=interaction_id,
            reviewer="reviewer",
            action="corrected",
            final_answer="Five business days.",
            oracle_chunk_ids=["doc-1#0"],
            criterion_labels=[ev.CriterionLabel(criterion="correctness", passed=False)],
        ),
        Topic.EXAMPLE_CURATED: ev.ExampleCurated(
            example_id=uuid4(),
            interaction_id=interaction_id,
            review_id=uuid4(),
            source="corrected",
            messages=messages,
            question="How long do refunds take?",
            answer="Five business days.",
            oracle_chunks=[chunk],
            reviewer="reviewer",
            judge_version="rubric-v1",
            base_model="smollm2-135m",
        ),
        Topic.KB_DOCUMENT: ev.DocumentSubmitted(
            document_id="doc-1",
            source="kb/refunds.md",
            title="Refunds",
            text="# Refunds\nRefunds take 5 days.",
            content_hash="c" * 64,
            format="md",
        ),
        Topic.TRAINING_RUN_FINISHED: ev.TrainingRunFinished(
            run_id="run-1",
            base_model="smollm2-135m",
            dataset_version="d" * 64,
            status="succeeded",
            adapter_id=ADAPTER,
            train_examples=120,
            holdout_examples=30,
            metrics={"token_f1": 0.41},
        ),
        Topic.ADAPTER_PROMOTED: ev.AdapterPromoted(
            adapter_id=ADAPTER,
            base_model="smollm2-135m",
            run_id="run-1",
            revision=2,
            metrics={"token_f1_gain": 0.08},
        ),
        Topic.ADAPTER_REJECTED: ev.AdapterRejected(
            adapter_id=ADAPTER,
            base_model="smollm2-135m",
            reasons=["token_f1 gain CI below 0"],
        ),
        Topic.ADAPTER_ROLLED_BACK: ev.AdapterRolledBack(
            from_adapter_id=ADAPTER,
            to_adapter_id=None,
            base_model="smollm2-135m",
            revision=3,
        ),
    }


OPS_PATHS = ("/metrics", "/openapi.json", "/healthz")
"""What `ops_statuses` calls: the metrics, the API schema and a probe."""


async def ops_statuses(http: httpx.AsyncClient, keys: dict[str, str]) -> dict[str, dict[str, int]]:
    """Status of each of `OPS_PATHS` without a key (`none`) and with each named key."""
    callers: dict[str, dict[str, str]] = {"none": {}} | {
        who: {"Authorization": f"Bearer {key}"} for who, key in keys.items()
    }
    return {
        path: {who: (await http.get(path, headers=h)).status_code for who, h in callers.items()}
        for path in OPS_PATHS
    }


@dataclass(frozen=True)
class DoorAnswers:
    """What a service answered to each request that breaks one of its door limits."""

    declared: httpx.Response
    """A JSON body just over the limit, with its Content-Length."""
    chunked: httpx.Response
    """A body over the limit sent chunked, without a Content-Length."""
    headers: httpx.Response
    """Headers over the header limit."""
    surrogate: httpx.Response
    """The route's valid body with a lone surrogate (`\\ud800`) in one text field."""
    healthz: int
    readyz: int
    """Probe statuses after all of the above."""


async def knock_on_doors(
    http: httpx.AsyncClient,
    path: str,
    *,
    body: Mapping[str, object],
    text_field: str,
    max_body_bytes: int,
    max_header_bytes: int,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> DoorAnswers:
    """Send a running service's route each request that breaks a door limit (issue #18).

    `body` is a body the route accepts; `text_field` (dotted for nesting) is the string field
    that gets a lone surrogate.
    """
    auth = headers or {}
    json_type = {"content-type": "application/json"}
    over = json.dumps({"pad": "a" * max_body_bytes}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(over), 64 * 1024):
            yield over[start : start + 64 * 1024]

    send = functools.partial(http.request, method, path)
    return DoorAnswers(
        declared=await send(content=over, headers=auth | json_type),
        chunked=await send(content=chunks(), headers=auth | json_type),
        headers=await send(json=body, headers=auth | {"x-padding": "h" * max_header_bytes}),
        surrogate=await send(
            content=_with_lone_surrogate(body, text_field), headers=auth | json_type
        ),
        healthz=(await http.get("/healthz")).status_code,
        readyz=(await http.get("/readyz")).status_code,
    )


def _with_lone_surrogate(body: Mapping[str, object], text_field: str) -> bytes:
    copy = json.loads(json.dumps(body))
    *parents, last = text_field.split(".")
    holder = copy
    for part in parents:
        holder = holder[int(part)] if isinstance(holder, list) else holder[part]
    holder[last] = "before \ud800 after"
    # json.dumps escapes the surrogate as `\ud800`, as a client's JSON encoder would.
    return json.dumps(copy).encode()


def assert_doors_held(answers: DoorAnswers, *, prefix: str, param: str) -> None:
    """Each door answered with its 4xx in the OpenAI envelope, and the service stayed up.

    `prefix` is the service's settings prefix (`RAG_`); `param` is where the surrogate was.
    """
    for response, status, code, setting in [
        (answers.declared, 413, "request_too_large", f"{prefix}MAX_REQUEST_BYTES"),
        (answers.chunked, 413, "request_too_large", f"{prefix}MAX_REQUEST_BYTES"),
        (answers.headers, 431, "headers_too_large", f"{prefix}MAX_HEADER_BYTES"),
        (answers.surrogate, 400, "invalid_text", "UTF-8"),
    ]:
        assert response.status_code == status, (code, response.status_code, response.text[:300])
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert error["type"] == "invalid_request_error", error
        assert error["code"] == code, error
        assert setting in error["message"], error
    assert "content-length" not in answers.chunked.request.headers
    assert answers.surrogate.json()["error"]["param"] == param
    assert (answers.healthz, answers.readyz) == (200, 200)


class ServiceNotReady(RuntimeError):
    """A spawned service exited, or did not answer its readiness URL in time."""


def uvicorn_command(factory: str, port: int, *, access_log: bool = True) -> list[str]:
    """How `raftloop up` runs a service: `factory` is e.g. `raftloop_hitl.main:build`."""
    command = [sys.executable, "-m", "uvicorn", "--factory", factory]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    return command if access_log else [*command, "--no-access-log"]


def log_tail(log: Path, chars: int = 3000) -> str:
    """The end of a process's log, for a failure message."""
    try:
        return log.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return f"(no log at {log})"


# No proxy from the environment: the services a test starts listen on loopback.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers_200(url: str) -> bool:
    try:
        with _DIRECT.open(url, timeout=2) as response:
            return int(response.status) == 200
    except (OSError, http.client.HTTPException):  # refused, reset, timed out, an error status
        return False


def wait_ready(
    proc: subprocess.Popen[bytes],
    ready_url: str,
    *,
    log: Path,
    timeout_s: float = 120.0,
    name: str | None = None,
) -> None:
    """Poll `ready_url` until it answers 200.

    Raises:
        ServiceNotReady: the process exited first, or time ran out; with the tail of `log`.
    """
    who = name or ready_url
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise ServiceNotReady(
                f"{who} exited with {proc.returncode} while starting:\n{log_tail(log)}"
            )
        if _answers_200(ready_url):
            return
        if time.monotonic() > deadline:
            raise ServiceNotReady(f"{who} not ready after {timeout_s:.0f} s:\n{log_tail(log)}")
        time.sleep(0.2)


def spawn_service(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    ready_url: str | None = None,
    timeout_s: float = 120.0,
    cwd: Path | None = None,
    name: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a service process, its output appended to `log`, and wait until it is ready.

    `env` is the whole environment (pass `os.environ | {...}` to inherit). With `ready_url` the
    call returns once that URL answers 200; a process that does not get there is stopped.

    Raises:
        ServiceNotReady: the process exited or did not get ready in `timeout_s`.
    """
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    if ready_url is not None:
        try:
            wait_ready(proc, ready_url, log=log, timeout_s=timeout_s, name=name)
        except BaseException:
            stop_service(proc)
            raise
    return proc


def stop_service(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> bool:
    """SIGTERM and wait for a clean shutdown; SIGKILL when it takes longer than `timeout_s`.

    Returns:
        Whether it had to be killed.
    """
    if proc.poll() is not None:
        return False
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        return True
    return False
