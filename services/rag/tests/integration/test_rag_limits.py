"""rag's doors (issue #18): body and header limits and unencodable text, on the real service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from raftloop_core.api import KeyStore
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import assert_doors_held, knock_on_doors
from raftloop_rag.adapters import SentenceTransformerEmbedder
from raftloop_rag.testing import auth, rag_settings, running_rag

pytestmark = pytest.mark.integration


async def test_retrieval_refuses_what_breaks_a_limit_and_stays_up(
    kafka_settings: KafkaSettings,
    embedder: SentenceTransformerEmbedder,
    keys: KeyStore,
    tmp_path: Path,
    unique: Callable[[str], str],
) -> None:
    settings = rag_settings(kafka_settings, tmp_path, unique)
    async with running_rag(settings, embedder, keys) as rag:
        answers = await knock_on_doors(
            rag.http,
            "/v1/retrieve",
            body={"query": "How long do refunds take?", "k": 2},
            text_field="query",
            max_body_bytes=settings.max_request_bytes,
            max_header_bytes=settings.max_header_bytes,
            headers=auth("acme"),
        )
        after = await rag.retrieve("acme", query="How long do refunds take?")

    assert_doors_held(answers, prefix="RAG_", param="query")
    assert "1048576 bytes" in answers.chunked.json()["error"]["message"]
    assert after.status_code == 200, after.text
