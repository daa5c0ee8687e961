"""The judge's doors (issue #18): body and header limits and unencodable text, on the service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from raftloop_core.api import KeyStore
from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.messaging import ensure_topics
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import assert_doors_held, knock_on_doors
from raftloop_judge.adapters import OpenAIChatEndpoint, SentenceTransformerEmbedder
from raftloop_judge.app import create_app
from raftloop_judge.store import SqlJudgeStore

from .conftest import openai_client
from .test_app import judge_settings

pytestmark = pytest.mark.integration

PAIR = {"question": "How long?", "answer_a": "Five days.", "answer_b": "No idea."}


async def test_pairwise_refuses_what_breaks_a_limit_and_stays_up(
    kafka_settings: KafkaSettings,
    unique: Callable[[str], str],
    tmp_path: Path,
    stubs: dict[str, str],
    embedder: SentenceTransformerEmbedder,
) -> None:
    settings = judge_settings(kafka_settings, tmp_path, unique, stubs["logprobs"])
    ensure_topics(kafka_settings, {settings.input_topic: 1, settings.review_topic: 1})
    internal = {
        "Authorization": f"Bearer {ensure_dev_credentials(settings.runtime).api_keys['internal']}"
    }
    app = create_app(
        settings,
        endpoint=OpenAIChatEndpoint(openai_client(stubs["logprobs"])),
        embedder=embedder,
        store=SqlJudgeStore(settings.database_url()),
        keys=KeyStore.for_runtime(settings.runtime, None),
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://judge") as http,
    ):
        answers = await knock_on_doors(
            http,
            "/v1/pairwise",
            body=PAIR,
            text_field="answer_b",
            max_body_bytes=settings.max_request_bytes,
            max_header_bytes=settings.max_header_bytes,
            headers=internal,
        )
        after = await http.post("/v1/pairwise", json=PAIR, headers=internal)

    assert_doors_held(answers, prefix="JUDGE_", param="answer_b")
    assert after.status_code == 200, after.text
