"""Bad input at every entry point: schema fuzz of each HTTP API, malformed events on every
consumed topic, malformed documents for ingest. Figures: 5xx, dead-lettered vs expected.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest
from fleet import Fleet, decoded, read_topic
from loop_support import INTERACTION_HEADER, ask, wait_until_queued
from reliability_tools import Section, record, spare_tenant_body

from raftloop_core.topics import Topic

if TYPE_CHECKING:
    import schemathesis

pytestmark = pytest.mark.integration
COMMAND = "make reliability  # or: pytest tests/reliability/test_reliability_bad_input.py"
# The key each API is fuzzed with: a role its API admits (the trainer admits only admins).
FUZZ_KEY = {
    "gateway": "client",
    "ingest": "internal",
    "judge": "internal",
    "hitl": "internal",
    "rag": "internal",
    "trainer": "admin",
}
TRAIN_ROUTE = "POST /v1/admin/train"
ROLLBACK_ROUTE = "POST /v1/adapters/rollback"
# Consumers of each topic in the fleet: each dead-letters its own copy of a poison message.
CONSUMERS = {
    Topic.KB_DOCUMENT: ("rag",),
    Topic.CHAT_COMPLETED: ("ingest",),
    Topic.CHAT_FEEDBACK: ("ingest", "hitl"),
    Topic.INTERACTION_INGESTED: ("judge",),
    Topic.INTERACTION_JUDGED: ("hitl",),
    Topic.REVIEW_COMPLETED: ("judge",),
    Topic.EXAMPLE_CURATED: ("judge", "trainer"),
    Topic.TRAINING_RUN_FINISHED: ("hitl",),
    Topic.ADAPTER_PROMOTED: ("gateway", "hitl"),
    Topic.ADAPTER_ROLLED_BACK: ("gateway", "hitl"),
    Topic.ADAPTER_REJECTED: ("hitl",),
}
MAX_MESSAGE_BYTES = 262_144  # the fleet's KAFKA_MAX_MESSAGE_BYTES (conftest)


def corpus() -> dict[str, bytes]:
    """One malformed value of each kind."""
    return {
        "not json": b"{this is not json",
        "invalid utf-8": b'{"interaction_id": "\xff\xfe\xfd"}',
        "wrong schema": json.dumps({"hello": "world", "schema_version": 1}).encode(),
        "wrong types": json.dumps(
            {
                "event_id": 5,
                "interaction_id": [1, 2],
                "messages": "not a list",
                "tenant": {"a": 1},
                "schema_version": "one",
            }
        ).encode(),
        "unknown schema version": json.dumps({"schema_version": 99}).encode(),
        "oversize": json.dumps({"pad": "x" * (MAX_MESSAGE_BYTES + 10_000)}).encode(),
    }


def _expected_5xx(response: schemathesis.Response) -> bool:
    """A 502 from the judge when its model gave no verdict: the upstream failed, not the API."""
    try:
        code: object = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return False
    return response.status_code == 502 and code == "judge_failed"


Prepare = Callable[["schemathesis.Case[Any]"], None]


def _fuzz(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    base: str,
    headers: dict[str, str],
    calls: list[int],
    expected: list[str],
    prepare: Prepare | None = None,
) -> list[str]:
    """Run one operation's generated cases; the unexpected 5xx answers."""
    from hypothesis import HealthCheck, given, settings

    failures: list[str] = []

    @settings(max_examples=8, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: schemathesis.Case[Any]) -> None:
        if prepare is not None:
            prepare(case)
        response = case.call(base_url=base, headers=headers, timeout=60)
        calls.append(response.status_code)
        if response.status_code >= 500:
            where = f"{case.method} {case.path}: {response.status_code}"
            (expected if _expected_5xx(response) else failures).append(where)

    check()
    return failures


def _trainer_db(fleet: Fleet) -> Path:
    return fleet.folder / "var" / "trainer" / "dataset.sqlite3"


def _trainer_state(fleet: Fleet) -> tuple[set[str], int, dict[str, object]]:
    """Tenants with examples, training runs recorded, and the serving alias."""
    with sqlite3.connect(f"file:{_trainer_db(fleet)}?mode=ro", uri=True, timeout=30) as conn:
        tenants = {r[0] for r in conn.execute("select distinct tenant from trainer_examples")}
        runs = int(conn.execute("select count(*) from trainer_runs").fetchone()[0])
    admin = {"Authorization": f"Bearer {fleet.keys['admin']}"}
    adapters = httpx.get(f"{fleet.url('trainer')}/v1/adapters", headers=admin, timeout=30)
    assert adapters.status_code == 200, adapters.text
    return tenants, runs, adapters.json()["serving"]


def _spare_tenant(live: set[str], spare: str) -> Prepare:
    """Point every generated "start a run" body that names a live tenant at `spare`."""
    from schemathesis.core import NotSet

    def prepare(case: schemathesis.Case[Any]) -> None:
        if f"{case.method.upper()} {case.path}" != TRAIN_ROUTE:
            return
        body = None if isinstance(case.body, NotSet) else case.body
        changed = spare_tenant_body(body, live, spare)
        if changed is not body:
            assert isinstance(changed, dict)  # a new body naming the spare tenant
            case.body = changed
            case.media_type = "application/json"

    return prepare


def _operations(
    schema: schemathesis.BaseSchema,
) -> Iterator[schemathesis.APIOperation[Any, Any, Any, Any]]:
    """Every operation of `schema`; one the schema cannot describe fails the test."""
    from schemathesis.core.result import Err

    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        yield result.ok()


def test_schema_fuzz_of_every_api_finds_no_server_errors(fleet: Fleet) -> None:
    import schemathesis

    live, runs_before, serving_before = _trainer_state(fleet)
    live |= {"default", "other"}  # the fleet's tenants, with examples or not
    spare = f"fuzz-{uuid.uuid4().hex[:8]}"  # not the key's tenant: the trainer refuses it
    # A rollback with history would switch the gateway's adapter under the other tests.
    skipped = {ROLLBACK_ROUTE} if serving_before.get("history") else set()
    rows, failures = [], []
    expected: list[str] = []
    for name, caller in FUZZ_KEY.items():
        base = fleet.url(name)
        spec = httpx.get(f"{base}/openapi.json", timeout=30).json()
        schema = schemathesis.openapi.from_dict(spec)
        headers = {"Authorization": f"Bearer {fleet.keys[caller]}"}
        prepare = _spare_tenant(live, spare) if name == "trainer" else None
        calls: list[int] = []
        for operation in _operations(schema):
            if name == "trainer" and f"{operation.method.upper()} {operation.path}" in skipped:
                continue
            failures += _fuzz(operation, base, headers, calls, expected, prepare)
        rows.append([name, caller, str(len(calls)), str(sum(s >= 500 for s in calls))])
    time.sleep(2)  # a run the fuzz launched would be recorded by now
    _, runs_after, serving_after = _trainer_state(fleet)
    record(
        Section(
            "20-fuzz",
            "Schema fuzz (schemathesis) of every running HTTP API",
            COMMAND,
            {
                "services": len(rows),
                "calls": sum(int(r[2]) for r in rows),
                "5xx": len(failures) + len(expected),
                "expected 5xx (502: the judge model gave no verdict)": len(expected),
                "unexpected 5xx": len(failures),
                "training runs started by the fuzz": runs_after - runs_before,
                "serving alias changed by the fuzz": int(serving_after != serving_before),
            },
            tables=[(["service", "key role", "calls", "5xx"], rows)],
            notes=[
                "Up to 8 generated cases per operation, each service with a key its API "
                "admits (table). Admin keys are used only for the trainer, whose routes all "
                "need one; the other services' admin routes (routing policy, gateway adapters) are "
                "fuzzed by their own suites so that this fuzz cannot change them under the "
                "other tests.",
                f"Trainer `{TRAIN_ROUTE}`: a generated body that would train a tenant with "
                "examples (no body, `null`, no `tenant`, or `default`/`other`) is sent with a "
                f"fresh tenant (`{spare}`) instead, which the trainer refuses (403: an admin "
                "trains only its own tenant); other bodies go as generated. Promote gets "
                "generated adapter ids, none of which is the tenant's, so each gets 404.",
                (
                    f"Trainer `{ROLLBACK_ROUTE}` was not fuzzed: the serving alias has a history, "
                    "so a rollback would switch the adapter the gateway serves."
                    if skipped
                    else f"Trainer `{ROLLBACK_ROUTE}` was fuzzed: the serving alias was never "
                    "promoted, so every rollback is refused (409)."
                ),
                *(f"Unexpected 5xx: {f}" for f in failures[:20]),
            ],
        )
    )
    assert failures == []
    assert runs_after == runs_before
    assert serving_after == serving_before


def _dead_letters(fleet: Fleet, topic: str, marker: str) -> dict[str, int]:
    from kafka import KafkaConsumer, TopicPartition

    from raftloop_core.ops import end_offsets

    counts: dict[str, int] = {}
    consumer = KafkaConsumer(bootstrap_servers=fleet.kafka.servers, group_id=None)
    try:
        dlt = f"{topic}.dlt"
        parts = consumer.partitions_for_topic(dlt) or set()
        marks = end_offsets(fleet.kafka, {dlt: len(parts)})
        tps = [TopicPartition(dlt, p) for p in sorted(parts)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < marks.get((dlt, tp.partition), 0) for tp in tps):
            assert time.monotonic() < deadline, f"could not read {dlt}"
            for batch in consumer.poll(timeout_ms=200).values():
                for r in batch:
                    key = (r.key or b"").decode(errors="replace")
                    if key.startswith(marker):
                        counts[key] = counts.get(key, 0) + 1
    finally:
        consumer.close()
    return counts


def test_malformed_events_on_every_topic_are_dead_lettered_and_the_loop_moves_on(
    fleet: Fleet,
) -> None:
    from kafka import KafkaProducer

    marker = f"bad-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(
        bootstrap_servers=fleet.kafka.servers, max_request_size=4 * MAX_MESSAGE_BYTES, acks="all"
    )
    values = corpus()
    for topic in CONSUMERS:
        for kind, value in values.items():
            producer.send(str(topic), value=value, key=f"{marker}:{kind}".encode())
    producer.flush(30)
    producer.close()

    expected = {t: len(values) * len(c) for t, c in CONSUMERS.items()}
    deadline = time.monotonic() + 240
    got: dict[Topic, dict[str, int]] = {}
    while True:
        got = {t: _dead_letters(fleet, str(t), marker) for t in CONSUMERS}
        if all(sum(got[t].values()) >= expected[t] for t in CONSUMERS):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(5)
    # After the poison, a real interaction still flows through every stage.
    after = f"{marker}-after"
    response = ask(fleet, f"{after} is the loop still moving?", key=fleet.keys["client"])
    assert response.status_code == 200, response.text
    flowed_s = wait_until_queued(
        fleet, after, {response.headers[INTERACTION_HEADER]}, timeout_s=180
    )
    healthy = {
        n: httpx.get(f"{s.url}/healthz", timeout=10).status_code for n, s in fleet.services.items()
    }
    rows = [
        [
            str(t),
            ", ".join(CONSUMERS[t]),
            str(len(values)),
            str(expected[t]),
            str(sum(got[t].values())),
            str(len(values) - len({k.split(":", 1)[1] for k in got[t]})),
        ]
        for t in CONSUMERS
    ]
    missing = sum(int(r[5]) for r in rows)
    record(
        Section(
            "21-dead-letters",
            "Malformed events on every consumed topic",
            COMMAND,
            {
                "topics": len(CONSUMERS),
                "malformed kinds": ", ".join(values),
                "sent": len(values) * len(CONSUMERS),
                "dead-lettered copies": sum(sum(g.values()) for g in got.values()),
                "expected copies": sum(expected.values()),
                "messages never dead-lettered": missing,
                "seconds for a good interaction to reach hitl afterwards": round(flowed_s),
                "services healthy afterwards": sum(s == 200 for s in healthy.values()),
            },
            tables=[
                (
                    ["topic", "consumers", "sent", "expected", "dead-lettered", "never parked"],
                    rows,
                )
            ],
            notes=["Expected: one copy on `<topic>.dlt` per consuming service."],
        )
    )
    assert missing == 0, got
    assert all(sum(got[t].values()) == expected[t] for t in CONSUMERS), got
    assert set(healthy.values()) == {200}, healthy


DOCUMENTS = {
    "empty.txt": b"",
    "binary.txt": bytes(range(256)) * 8,
    "bad-utf8.md": b"# Title\n\xff\xfe\xfd not utf-8",
    "broken.pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage",
    "fake.pdf": b"this is not a pdf at all",
    "nested.html": b"<div>" * 5000 + b"deep" + b"</div>" * 5000,
    "../../etc/passwd.txt": b"path traversal in the file name",
    "program.exe": b"MZ\x90\x00\x03",
}


def test_malformed_documents_get_clear_answers_and_no_5xx(fleet: Fleet) -> None:
    url = f"{fleet.url('ingest')}/v1/documents"
    headers = {"Authorization": f"Bearer {fleet.keys['internal']}"}
    rows, server_errors = [], 0
    for name, data in DOCUMENTS.items():
        response = httpx.post(url, files={"files": (name, data)}, headers=headers, timeout=120)
        server_errors += response.status_code >= 500
        body = response.json()
        outcome = (
            body["documents"][0].get("status", "?")
            if response.status_code == 200 and body.get("documents")
            else body.get("error", {}).get("message", "")[:80]
        )
        rows.append([f"`{name}`", str(response.status_code), str(outcome)])
    oversize = httpx.post(
        url, files={"files": ("big.txt", b"a" * (64 * 1024 * 1024))}, headers=headers, timeout=120
    )
    server_errors += oversize.status_code >= 500
    rows.append(["`big.txt` (64 MiB)", str(oversize.status_code), "too large"])
    names = [
        str(e.get("metadata", {}).get("filename", ""))
        for e in decoded(read_topic(fleet.kafka, Topic.KB_DOCUMENT))
    ]
    traversal = [n for n in names if "/" in n or ".." in n]
    record(
        Section(
            "22-documents",
            "Malformed documents for ingest",
            COMMAND,
            {
                "documents": len(DOCUMENTS) + 1,
                "5xx": server_errors,
                "kb.document filenames keeping a path": len(traversal),
            },
            tables=[(["file", "status", "outcome"], rows)],
            notes=[
                "An upload is all or nothing: an unreadable file is a 422 (413 when too "
                "large) naming it and why, and nothing of that upload is published. "
                "A traversal name is cut to its base name in the event's filename; the "
                "`source` label keeps the client's name verbatim (`upload:../../etc/passwd.txt`) "
                "as a label and document-id seed, never as a path that is opened.",
            ],
        )
    )
    assert server_errors == 0
    assert oversize.status_code == 413
    assert traversal == []


class _Pwn:
    """Unpickling this touches a file: proof that a pickle was loaded."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.target, "w"))


def _hostile_adapters(registry: Path, outside: Path, pwned: Path) -> dict[str, str]:
    """Write hostile adapter folders into the registry; name -> the id each claims."""
    import hashlib
    import pickle

    import torch
    from safetensors.torch import save_file

    adapters = registry / "adapters"
    adapters.mkdir(parents=True, exist_ok=True)
    config = json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"]})
    made = {}

    blob = pickle.dumps(_Pwn(str(pwned)))
    folder = adapters / hashlib.sha256(blob).hexdigest()
    folder.mkdir()
    (folder / "adapter_model.bin").write_bytes(blob)
    (folder / "adapter_config.json").write_text(config)
    made["pickle weights (.bin)"] = folder.name

    folder = adapters / ("f" * 64)
    folder.mkdir()
    save_file({"w": torch.zeros(2, 2)}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(config)
    made["hash mismatch"] = folder.name

    save_file({"w": torch.ones(2, 2)}, str(outside))
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    folder = adapters / digest
    folder.mkdir()
    (folder / "adapter_model.safetensors").symlink_to(outside)
    (folder / "adapter_config.json").write_text(config)
    made["symlinked weights"] = folder.name

    target = registry.parent / "elsewhere"
    target.mkdir(exist_ok=True)
    save_file({"w": torch.full((2, 2), 3.0)}, str(target / "adapter_model.safetensors"))
    digest = hashlib.sha256((target / "adapter_model.safetensors").read_bytes()).hexdigest()
    (adapters / digest).symlink_to(target)
    made["symlinked folder"] = digest

    made["path traversal id"] = "../../../etc/passwd"
    made["not an id"] = "serving; rm -rf /"
    return made


def test_hostile_adapter_files_are_never_loaded(fleet: Fleet, tmp_path: Path) -> None:
    registry = fleet.folder / "var" / "registry"
    pwned = tmp_path / "pwned-by-pickle"
    hostile = _hostile_adapters(registry, tmp_path / "outside.safetensors", pwned)
    admin = {"Authorization": f"Bearer {fleet.keys['admin']}"}
    # The trainer owns promotion (issue #17); the gateway only follows the tenant's alias file.
    promote = f"{fleet.url('trainer')}/v1/adapters/{{}}/promote"
    rows, loaded, server_errors = [], 0, 0
    alias = registry / "aliases" / "default" / "serving.json"
    alias.parent.mkdir(parents=True, exist_ok=True)
    try:
        for name, adapter_id in hostile.items():
            url = promote.format(quote(adapter_id, safe=""))
            answer = httpx.post(url, json={}, headers=admin, timeout=60)
            server_errors += answer.status_code >= 500
            # A tampered alias file (what a hostile writer to shared storage could do).
            alias.write_text(
                json.dumps({"alias": "serving", "adapter_id": adapter_id, "revision": 99})
            )
            time.sleep(5)  # the gateway re-reads the alias every GATEWAY_ALIAS_POLL_S (2 s)
            chat = ask(fleet, f"hostile adapter check {name}", key=fleet.keys["client"])
            served = chat.headers.get("x-raftloop-adapter", "")
            loaded += served == adapter_id
            rows.append([name, str(answer.status_code), str(chat.status_code), served[:12] or "-"])
    finally:
        alias.unlink(missing_ok=True)
    time.sleep(3)
    loaded += pwned.exists()
    record(
        Section(
            "23-adapters",
            "Hostile adapter files for the gateway",
            COMMAND,
            {
                "hostile adapters": len(hostile),
                "loaded that should not have been": loaded,
                "pickle payload executed": int(pwned.exists()),
                "5xx on promote": server_errors,
            },
            tables=[
                (["adapter", "trainer promote API", "chat after a tampered alias", "served"], rows)
            ],
            notes=[
                "Each hostile id is promoted through the admin API and also written straight "
                "into the serving alias file; the gateway must refuse it and keep serving what "
                "it served (`base`)."
            ],
        )
    )
    assert loaded == 0, rows
    assert server_errors == 0, rows
