from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from raftloop_core.events import InteractionJudged
from raftloop_judge.adapters import (
    OpenAIChatEndpoint,
    SentenceTransformerEmbedder,
    bundled_embedding_model,
)
from raftloop_judge.app import build_service
from raftloop_judge.service import JudgeService
from raftloop_judge.settings import JudgeSettings
from raftloop_judge.store import SqlJudgeStore

from ..endpoints import serve, stub_app

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(bundled_embedding_model())


@pytest.fixture(scope="session")
def stubs() -> Iterator[dict[str, str]]:
    behaviours = ("logprobs", "nologprobs", "garbage", "gullible")
    with (
        serve(stub_app("logprobs")) as a,
        serve(stub_app("nologprobs")) as b,
        serve(stub_app("garbage")) as c,
        serve(stub_app("gullible")) as d,
    ):
        yield dict(zip(behaviours, (a, b, c, d), strict=True))


def openai_client(base_url: str, key: str = "test-key") -> AsyncOpenAI:
    # A plain number: openai 3 takes its own HTTP library's timeouts (httpx2), not httpx's.
    return AsyncOpenAI(base_url=base_url, api_key=key, timeout=60.0, max_retries=2)


class Published(list[InteractionJudged]):
    async def __call__(self, event: InteractionJudged) -> None:
        self.append(event)


def make_service(
    base_url: str,
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
    key: str = "test-key",
    **overrides: Any,
) -> tuple[JudgeService, Published]:
    settings = JudgeSettings(
        runtime={"data_dir": tmp_path},
        **overrides,
    )
    published = Published()
    service = build_service(
        settings,
        endpoint=OpenAIChatEndpoint(openai_client(base_url, key), settings.model),
        embedder=embedder,
        store=SqlJudgeStore(settings.database_url()),
        publish=published,
    )
    return service, published
