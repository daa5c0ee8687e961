"""ingest's doors (issue #18): uploads have their own limit, every other route the JSON one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from ingest_support import Collector, create_topics, settings_for, wait_for

from raftloop_core.api import ApiKey, KeyStore
from raftloop_core.credentials import hash_key
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import assert_doors_held, knock_on_doors
from raftloop_core.topics import Topic
from raftloop_ingest.adapters import SqlIngestStore, make_engine
from raftloop_ingest.app import create_app
from raftloop_ingest.redaction import Redactor

pytestmark = pytest.mark.integration

KEYS = KeyStore(
    [ApiKey(key_id="i", key_sha256=hash_key("internal-key"), tenant="acme", role="internal")]
)
AUTH = {"Authorization": "Bearer internal-key"}
UPLOAD_LIMIT = 64 * 1024


def text_file(size: int) -> bytes:
    return b"# Handbook\n\n" + b"Refunds take five business days. " * (size // 33)


async def test_uploads_take_their_own_limit_and_other_routes_the_json_one(
    kafka_settings: KafkaSettings, unique: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique("lim") + "."
    create_topics(kafka_settings, prefix)
    settings = settings_for(kafka_settings, prefix, str(tmp_path), unique("g")).model_copy(
        update={"max_request_bytes": 8 * 1024, "max_upload_bytes": UPLOAD_LIMIT}
    )
    store = SqlIngestStore(make_engine(settings.database_url()))
    app = create_app(settings, store=store, scrubbers=Redactor(hash_key=b"k"), keys=KEYS)
    topic = f"{prefix}{Topic.KB_DOCUMENT}"

    async def multipart(data: bytes) -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="big.md"\r\n\r\n'
        for start in range(0, len(data), 16 * 1024):
            yield data[start : start + 16 * 1024]
        yield b"\r\n--b--\r\n"

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://ingest") as http,
        Collector(kafka_settings, [topic]) as seen,
    ):
        # Over the JSON limit, under the upload limit: the upload route takes it.
        taken = await http.post(
            "/v1/documents", files={"files": ("ok.md", text_file(20_000))}, headers=AUTH
        )
        declared = await http.post(
            "/v1/documents", files={"files": ("big.md", text_file(UPLOAD_LIMIT))}, headers=AUTH
        )
        chunked = await http.post(
            "/v1/documents",
            content=multipart(text_file(UPLOAD_LIMIT)),
            headers=AUTH | {"content-type": "multipart/form-data; boundary=b"},
        )
        doors = await knock_on_doors(
            http,
            "/v1/documents/some-document",
            method="DELETE",
            body={"reason": "outdated"},
            text_field="reason",
            max_body_bytes=settings.max_request_bytes,
            max_header_bytes=settings.max_header_bytes,
            headers=AUTH,
        )
        await wait_for(lambda: len(seen.on(topic)) >= 1)
        again = await http.post(
            "/v1/documents", files={"files": ("ok.md", text_file(20_000))}, headers=AUTH
        )

    assert taken.status_code == 200, taken.text
    assert taken.json()["documents"][0]["status"] == "submitted"
    for refused in (declared, chunked):
        assert refused.status_code == 413, refused.text
        error = refused.json()["error"]
        assert error["code"] == "request_too_large"
        assert f"limit of {UPLOAD_LIMIT} bytes" in error["message"]
        assert "INGEST_MAX_UPLOAD_BYTES" in error["message"]
    assert "content-length" not in chunked.request.headers
    assert len(seen.on(topic)) == 1  # neither refused upload was published
    assert_doors_held(doors, prefix="INGEST_", param="reason")
    assert again.json()["documents"][0]["status"] == "unchanged"
