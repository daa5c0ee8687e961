"""The judge's doors (issue #18): body and header limits hold on the running service.

The judge takes no request body since its pairwise route went (the pairwise judge is a library
the trainer calls in process): an oversized POST is refused without its body being read, and
oversized headers before anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from raftloop_core.api import KeyStore
from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.messaging import ensure_topics
from raftloop_core.settings import KafkaSettings
from raftloop_judge.adapters import OpenAIChatEndpoint, SentenceTransformerEmbedder
from raftloop_judge.app import create_app
from raftloop_judge.store import SqlJudgeStore

from .conftest import openai_client
from .test_app import judge_settings

pytestmark = pytest.mark.integration


async def test_oversized_bodies_and_headers_are_refused_and_the_judge_stays_up(
    kafka_settings: KafkaSettings,
    unique: Callable[[str], str],
    tmp_path: Path,
    stubs: dict[str, str],
    embedder: SentenceTransformerEmbedder,
) -> None:
    settings = judge_settings(kafka_settings, tmp_path, unique, stubs["logprobs"])
    ensure_topics(kafka_settings, {settings.input_topic: 1, settings.review_topic: 1})
    key = ensure_dev_credentials(settings.runtime).api_keys["internal"]
    auth = {"Authorization": f"Bearer {key}"}
    app = create_app(
        settings,
        endpoint=OpenAIChatEndpoint(openai_client(stubs["logprobs"])),
        embedder=embedder,
        store=SqlJudgeStore(settings.database_url()),
        keys=KeyStore.for_runtime(settings.runtime, None),
    )
    over = b'{"pad": "' + b"a" * settings.max_request_bytes + b'"}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(over), 64 * 1024):
            yield over[start : start + 64 * 1024]

    json_type = {"content-type": "application/json"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://judge") as http,
    ):
        declared = await http.post("/v1/agreement", content=over, headers=auth | json_type)
        chunked = await http.post("/v1/agreement", content=chunks(), headers=auth | json_type)
        big_headers = await http.get(
            "/v1/agreement", headers=auth | {"x-padding": "h" * settings.max_header_bytes}
        )
        after = await http.get("/v1/agreement", headers=auth)
        healthz = await http.get("/healthz")

    # No route takes a body: a POST is refused whole, by its size or by its method, in the
    # OpenAI envelope and without the body being read.
    for response in (declared, chunked):
        assert response.status_code in {405, 413}, response.text[:300]
        assert response.json()["error"]["message"]
    assert big_headers.status_code == 431, big_headers.text[:300]
    assert "JUDGE_MAX_HEADER_BYTES" in big_headers.json()["error"]["message"]
    assert after.status_code == 200, after.text
    assert healthz.status_code == 200
