"""Knowledge documents: `raftloop kb add|remove` and the upload endpoint on the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import raftloop_demo_kb
import typer
from fastapi import FastAPI
from ingest_pdf import pdf_bomb
from ingest_support import Collector, Record, create_topics, settings_for, wait_for
from pydantic import TypeAdapter
from typer.testing import CliRunner

from raftloop_core import events as ev
from raftloop_core.api import ApiKey, KeyStore
from raftloop_core.credentials import hash_key
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import ops_statuses
from raftloop_core.topics import Topic
from raftloop_ingest.adapters import SqlIngestStore, make_engine
from raftloop_ingest.app import create_app
from raftloop_ingest.cli import register
from raftloop_ingest.documents import parse
from raftloop_ingest.redaction import Redactor

pytestmark = pytest.mark.integration


@pytest.fixture
def kb_env(
    kafka_settings: KafkaSettings,
    unique: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    prefix = unique("kb") + "."
    create_topics(kafka_settings, prefix)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("INGEST_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("RAFTLOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return prefix


async def cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI in a thread: it calls asyncio.run itself, as `raftloop` does."""
    app = typer.Typer()
    register(app)
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    return result.exit_code, result.stdout, result.stderr


# What `ev.adapter_for(Topic.KB_DOCUMENT)` parses, typed as the two document events.
DOCUMENT_EVENTS: TypeAdapter[ev.DocumentSubmitted | ev.DocumentDeleted] = TypeAdapter(
    ev.DocumentEvent
)


def documents(
    records: list[Record], tenant: str
) -> list[ev.DocumentSubmitted | ev.DocumentDeleted]:
    events = [DOCUMENT_EVENTS.validate_json(r.value) for r in records]
    return [e for e in events if e.tenant == tenant]


async def test_kb_add_publishes_each_demo_document_once(
    kafka_settings: KafkaSettings, kb_env: str
) -> None:
    topic = f"{kb_env}{Topic.KB_DOCUMENT}"
    docs = raftloop_demo_kb.documents()
    async with Collector(kafka_settings, [topic]) as seen:
        code, out, err = await cli(
            "kb", "add", str(raftloop_demo_kb.docs_dir()), "--tenant", "demo"
        )
        assert code == 0, err
        await wait_for(lambda: len(seen.on(topic)) >= len(docs))
        code, out2, _ = await cli("kb", "add", str(raftloop_demo_kb.docs_dir()), "--tenant", "demo")
        assert code == 0
        first = documents(seen.on(topic), "demo")
        assert isinstance(first[0], ev.DocumentSubmitted)
        target = str(raftloop_demo_kb.docs_dir() / first[0].source)  # the path it came from
        code, out3, _ = await cli("kb", "remove", target, "--tenant", "demo")
        assert code == 0
        await wait_for(lambda: len(seen.on(topic)) >= len(docs) + 1)

    assert f"{len(docs)} submitted" in out
    assert f"{len(docs)} unchanged" in out2  # a second run publishes nothing new
    events = documents(seen.on(topic), "demo")
    submitted = [e for e in events if isinstance(e, ev.DocumentSubmitted)]
    assert len(submitted) == len(docs)
    assert {e.format for e in submitted} == {"md", "txt", "html", "pdf"}
    assert all(e.text and e.title and len(e.content_hash) == 64 for e in submitted)
    assert len({e.document_id for e in submitted}) == len(docs)
    [deleted] = [e for e in events if isinstance(e, ev.DocumentDeleted)]
    assert deleted.document_id == first[0].document_id
    assert "1 deleted" in out3
    for record in seen.on(topic):
        assert record.key is not None
    html = next(e for e in submitted if e.format == "html")
    assert "<" not in html.text[:200]
    # Events name documents by their place in the folder, never by a path on this machine.
    folder = str(raftloop_demo_kb.docs_dir())
    assert {e.source for e in submitted} == {p.name for p in docs}
    for record in seen.on(topic):
        assert folder not in record.value.decode(), record.value[:300]
    assert not any(v.startswith("/") for e in submitted for v in e.metadata.values())


async def test_bad_files_give_one_error_line_each_and_the_rest_continue(
    kafka_settings: KafkaSettings, kb_env: str, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.md").write_text("# Refunds\n\nRefunds take **five** business days.\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage without xref\n")
    (folder / "notes.xyz").write_text("not a document type")
    (folder / "dangling.txt").symlink_to(folder / "missing-target.txt")
    topic = f"{kb_env}{Topic.KB_DOCUMENT}"
    paths = [folder / n for n in ("broken.pdf", "notes.xyz", "nowhere.txt", "dangling.txt")]
    async with Collector(kafka_settings, [topic]) as seen:
        code, out, err = await cli(
            "kb", "add", *map(str, paths), str(folder / "good.md"), "--tenant", "t1"
        )
        await wait_for(lambda: len(seen.on(topic)) >= 1)
    errors = [line for line in err.splitlines() if line.strip()]
    assert code == 1
    assert len(errors) == 4, err
    assert any("broken.pdf" in e and "PDF" in e for e in errors)
    assert any("notes.xyz" in e and "unsupported file type" in e for e in errors)
    assert any("nowhere.txt" in e and "no such file" in e for e in errors)
    assert "Traceback" not in out + err
    [event] = documents(seen.on(topic), "t1")
    assert isinstance(event, ev.DocumentSubmitted)
    assert event.title == "Refunds"
    assert "five business days" in event.text
    assert "**" not in event.text


async def test_upload_endpoint_checks_the_key_and_uses_its_tenant(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique("up") + "."
    create_topics(kafka_settings, prefix)
    keys = KeyStore(
        [
            ApiKey(key_id="i", key_sha256=hash_key("internal-key"), tenant="acme", role="internal"),
            ApiKey(key_id="c", key_sha256=hash_key("client-key"), tenant="acme", role="client"),
        ]
    )
    settings = settings_for(kafka_settings, prefix, str(tmp_path), unique("g"))
    store = SqlIngestStore(make_engine(settings.database_url()))
    app = create_app(settings, store=store, scrubbers=Redactor(hash_key=b"k"), keys=keys)
    topic = f"{prefix}{Topic.KB_DOCUMENT}"
    files = [
        ("files", ("faq.html", b"<html><title>FAQ</title><body><p>Hello there</p></body></html>")),
        ("files", ("data.bin", b"\x00\x01")),
    ]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ingest") as client,
        Collector(kafka_settings, [topic]) as seen,
    ):
        missing = await client.post("/v1/documents", files=files)
        client_role = await client.post(
            "/v1/documents", files=files, headers={"Authorization": "Bearer client-key"}
        )
        auth = {"Authorization": "Bearer internal-key"}
        refused = await client.post("/v1/documents", files=files, headers=auth)
        ok = await client.post("/v1/documents", files=files[:1], headers=auth)
        again = await client.post("/v1/documents", files=files[:1], headers=auth)
        doc_id = ok.json()["documents"][0]["document_id"]
        gone = await client.delete(f"/v1/documents/{doc_id}", headers=auth)
        await wait_for(lambda: len(seen.on(topic)) >= 2)

    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert client_role.status_code == 403
    # All or nothing: the unreadable file refuses the upload, and faq.html was not published.
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "unreadable_document"
    assert error["param"] == "files"
    assert "upload:data.bin: unsupported file type '.bin'" in error["message"]
    assert "Nothing of this upload was published" in error["message"]
    assert ok.status_code == 200
    body = ok.json()
    assert body["tenant"] == "acme"
    assert [d["status"] for d in body["documents"]] == ["submitted"]
    assert [d["status"] for d in again.json()["documents"]] == ["unchanged"]
    assert gone.json()["documents"][0]["status"] == "deleted"
    submitted, deleted = documents(seen.on(topic), "acme")
    assert isinstance(submitted, ev.DocumentSubmitted)
    assert submitted.title == "FAQ"
    assert submitted.text == "Hello there"
    assert isinstance(deleted, ev.DocumentDeleted)


async def test_a_key_cannot_delete_another_tenants_document(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique("del") + "."
    create_topics(kafka_settings, prefix)
    keys = KeyStore(
        [
            ApiKey(key_id="a", key_sha256=hash_key("acme-key"), tenant="acme", role="internal"),
            ApiKey(key_id="g", key_sha256=hash_key("globex-key"), tenant="globex", role="internal"),
            ApiKey(key_id="ga", key_sha256=hash_key("globex-admin"), tenant="globex", role="admin"),
        ]
    )
    settings = settings_for(kafka_settings, prefix, str(tmp_path), unique("g"))
    store = SqlIngestStore(make_engine(settings.database_url()))
    app = create_app(settings, store=store, scrubbers=Redactor(hash_key=b"k"), keys=keys)
    topic = f"{prefix}{Topic.KB_DOCUMENT}"
    files = [("files", ("plan.md", b"# Plan\n\nAcme's private launch plan."))]
    acme = {"Authorization": "Bearer acme-key"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ingest") as client,
        Collector(kafka_settings, [topic]) as seen,
    ):
        doc_id = (await client.post("/v1/documents", files=files, headers=acme)).json()[
            "documents"
        ][0]["document_id"]
        refused = [
            await client.delete(f"/v1/documents/{doc_id}", headers={"Authorization": f"Bearer {k}"})
            for k in ("globex-key", "globex-admin")
        ]
        unknown = await client.delete(f"/v1/documents/{'0' * 32}", headers=acme)
        again = await client.post("/v1/documents", files=files, headers=acme)
        own = await client.delete(f"/v1/documents/{doc_id}", headers=acme)
        await wait_for(lambda: len(documents(seen.on(topic), "acme")) >= 2)
        await asyncio.sleep(1)  # any stray deletion would be on the topic by now

    for response in refused:
        assert response.status_code == 404, response.text
        assert response.json()["error"]["type"] == "not_found_error"
        assert "acme" not in response.text
    assert unknown.status_code == 404
    # acme's row survived: the same upload is still unchanged, and acme may delete it.
    assert again.json()["documents"][0]["status"] == "unchanged"
    assert own.status_code == 200
    assert own.json()["documents"][0]["status"] == "deleted"
    assert documents(seen.on(topic), "globex") == []
    assert [type(e) for e in documents(seen.on(topic), "acme")] == [
        ev.DocumentSubmitted,
        ev.DocumentDeleted,
    ]
    assert store.document_hash(doc_id) is None


async def test_kb_add_refuses_links_out_of_the_folder(
    kafka_settings: KafkaSettings, kb_env: str, tmp_path: Path
) -> None:
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "good.md").write_text("# Refunds\n\nRefunds take five business days.\n")
    secret = tmp_path / "outside" / "notes.txt"
    secret.parent.mkdir()
    secret.write_text("root password is hunter22 for the database server")
    (folder / "notes.txt").symlink_to(secret)
    topic = f"{kb_env}{Topic.KB_DOCUMENT}"
    async with Collector(kafka_settings, [topic]) as seen:
        code, out, err = await cli("kb", "add", str(folder), "--tenant", "links")
        await wait_for(lambda: len(seen.on(topic)) >= 1)
        await asyncio.sleep(1)  # a published secret would be on the topic by now
    assert code == 1
    [line] = [line for line in err.splitlines() if line.strip()]
    assert line.startswith(f"error: {folder / 'notes.txt'}: a symbolic link to {secret}, outside")
    assert "1 submitted; 1 error(s)" in out
    [event] = documents(seen.on(topic), "links")
    assert isinstance(event, ev.DocumentSubmitted)
    assert event.source == "good.md"
    assert all(b"hunter22" not in r.value for r in seen.on(topic))


def documents_app(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], tmp_path: Path, **update: object
) -> tuple[FastAPI, str]:
    prefix = unique("docs") + "."
    create_topics(kafka_settings, prefix)
    keys = KeyStore(
        [ApiKey(key_id="i", key_sha256=hash_key("internal-key"), tenant="acme", role="internal")]
    )
    settings = settings_for(kafka_settings, prefix, str(tmp_path), unique("g"))
    settings = settings.model_copy(update=update)
    store = SqlIngestStore(make_engine(settings.database_url()))
    app = create_app(settings, store=store, scrubbers=Redactor(hash_key=b"k"), keys=keys)
    return app, f"{prefix}{Topic.KB_DOCUMENT}"


AUTH = {"Authorization": "Bearer internal-key"}
SMALL = ("small.md", b"# Shipping\n\nParcels ship within two days.")


def chapters(size: int) -> bytes:
    paragraph = "Refunds reach the original card within five business days of approval. " * 8
    text: list[str] = []
    i = 0
    while sum(map(len, text)) < size:
        text.append(f"Chapter {i}\n\n{paragraph}\n\n{paragraph}")
        i += 1
    return "\n\n".join(text).encode()


async def test_an_upload_with_a_file_over_the_text_limit_publishes_nothing(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    app, topic = documents_app(kafka_settings, unique, tmp_path, max_text_bytes=50_000)
    files = [("files", SMALL), ("files", ("big.txt", chapters(120_000))), ("files", SMALL)]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ingest") as http,
        Collector(kafka_settings, [topic]) as seen,
    ):
        refused = await http.post("/v1/documents", files=files, headers=AUTH)
        health = await http.get("/healthz")
        later = await http.post("/v1/documents", files=[("files", SMALL)], headers=AUTH)
        await wait_for(lambda: len(seen.on(topic)) >= 1)
        await asyncio.sleep(1)  # anything of the refused upload would be on the topic by now

    assert refused.status_code == 413, refused.text
    error = refused.json()["error"]
    assert error["code"] == "too_large"
    message = error["message"]
    assert message.startswith("upload:big.txt: its extracted text is ")
    assert "over the 50,000-byte limit (INGEST_MAX_TEXT_BYTES)" in message
    assert "split the document into smaller files or raise INGEST_MAX_TEXT_BYTES" in message
    assert message.endswith("Nothing of this upload was published.")
    assert health.status_code == 200
    assert later.status_code == 200
    [event] = documents(seen.on(topic), "acme")  # small.md of the later upload, only
    assert isinstance(event, ev.DocumentSubmitted)
    assert event.source == "upload:small.md"


async def test_a_document_over_the_message_limit_arrives_in_parts_that_fit(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    # Before #18 a document over ~1 MB of text was one event the broker refused: a 500.
    app, topic = documents_app(kafka_settings, unique, tmp_path)
    limit = kafka_settings.max_message_bytes
    data = chapters(int(2.5 * limit))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ingest") as http,
        Collector(kafka_settings, [topic]) as seen,
    ):
        response = await http.post(
            "/v1/documents", files=[("files", ("handbook.txt", data))], headers=AUTH
        )
        await wait_for(lambda: len(seen.on(topic)) >= 3)

    assert response.status_code == 200, response.text
    [result] = response.json()["documents"]
    assert result["status"] == "submitted"
    records = seen.on(topic)
    assert all(len(r.value) <= limit for r in records)
    assert {r.key for r in records} == {result["document_id"].encode()}
    found = documents(records, "acme")
    parts = [p for p in found if isinstance(p, ev.DocumentSubmitted)]
    assert parts == found  # all of them submissions
    assert [(p.part, p.parts) for p in parts] == [(i, len(parts)) for i in range(len(parts))]
    assert len({p.content_hash for p in parts}) == 1
    text = "\n\n".join(p.text for p in parts)
    assert text == parse("handbook.txt", data).text


async def test_a_pdf_bomb_is_refused_and_healthz_stays_fast_while_one_is_parsed(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    app, topic = documents_app(kafka_settings, unique, tmp_path, parse_timeout_s=3.0)
    latencies: list[float] = []
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ingest") as http,
        Collector(kafka_settings, [topic]) as seen,
    ):
        # Over the decompression budget: refused as soon as the stream is read.
        bomb = await http.post(
            "/v1/documents",
            files=[("files", SMALL), ("files", ("bomb.pdf", pdf_bomb(74_000_000)))],
            headers=AUTH,
        )
        # Under the budget, but text extraction would take most of a minute (it took the
        # event loop with it before #18): stopped at the deadline while /healthz answers.
        slow = asyncio.create_task(
            http.post(
                "/v1/documents", files=[("files", ("slow.pdf", pdf_bomb(30_000_000)))], headers=AUTH
            )
        )
        while not slow.done():
            started = time.monotonic()
            health = await http.get("/healthz")
            latencies.append(time.monotonic() - started)
            assert health.status_code == 200
            await asyncio.sleep(0.1)
        stopped = await slow
        after = await http.post("/v1/documents", files=[("files", SMALL)], headers=AUTH)
        await wait_for(lambda: len(seen.on(topic)) >= 1)
        await asyncio.sleep(1)

    assert bomb.status_code == 413, bomb.text
    assert bomb.json()["error"]["code"] == "too_large"
    message = bomb.json()["error"]["message"]
    assert message.startswith("upload:bomb.pdf: ")
    assert "INGEST_PARSE_MAX_DECOMPRESSED_BYTES" in message
    assert "decompression bomb" in message
    assert stopped.status_code == 422, stopped.text
    assert stopped.json()["error"]["code"] == "parse_timeout"
    assert (
        "upload:slow.pdf: parsing took longer than 3 s (INGEST_PARSE_TIMEOUT_S)"
        in (stopped.json()["error"]["message"])
    )
    assert len(latencies) >= 10
    assert max(latencies) < 1.0, latencies
    assert after.status_code == 200
    [event] = documents(seen.on(topic), "acme")  # small.md of the bomb's upload never went out
    assert isinstance(event, ev.DocumentSubmitted)


async def test_metrics_and_docs_need_an_operators_key_when_protected(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    settings = settings_for(kafka_settings, unique("ops") + ".", str(tmp_path), unique("g"))
    settings = settings.model_copy(
        update={"runtime": settings.runtime.model_copy(update={"protect_ops": True})}
    )
    keys = KeyStore(
        [
            ApiKey(key_id="a", key_sha256=hash_key("acme-admin"), tenant="acme", role="admin"),
            ApiKey(key_id="m", key_sha256=hash_key("metrics-key"), role="metrics"),
        ]
    )
    store = SqlIngestStore(make_engine(settings.database_url()))
    app = create_app(settings, store=store, scrubbers=Redactor(hash_key=b"k"), keys=keys)
    who = {"acme-admin": "acme-admin", "metrics": "metrics-key"}
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
        got = await ops_statuses(http, who)
    assert got["/metrics"] == {"none": 401, "acme-admin": 403, "metrics": 200}
    assert got["/openapi.json"] == {"none": 401, "acme-admin": 200, "metrics": 200}
    assert set(got["/healthz"].values()) == {200}
