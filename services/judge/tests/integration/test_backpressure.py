"""Backpressure, not abandonment (issue #18): the judge on the real broker with a slow endpoint.

Timeouts are shrunk so the suite stays fast: `max.poll.interval.ms` is 4 s (the old batch
deadline was half of it, 2 s) and the endpoint takes 5 s per answer, longer than both.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from faststream.kafka import KafkaMessage
from openai import AsyncOpenAI

from raftloop_core.api import KeyStore
from raftloop_core.events import InteractionJudged
from raftloop_core.messaging import (
    ATTEMPTS_HEADER,
    ERROR_CLASS_HEADER,
    consumer_options,
    ensure_topics,
    make_broker,
)
from raftloop_core.settings import KafkaSettings, RuntimeSettings
from raftloop_core.topics import dead_letter
from raftloop_judge.adapters import OpenAIChatEndpoint, SentenceTransformerEmbedder
from raftloop_judge.app import create_app
from raftloop_judge.backpressure import EndpointStalled
from raftloop_judge.evaluators import CallOptions, LimitedEndpoint
from raftloop_judge.main import judge_client
from raftloop_judge.settings import JudgeSettings
from raftloop_judge.store import SqlJudgeStore

from ..endpoints import serve, stub_app
from .test_app import wait_for
from .test_endpoint_behaviours import QA, ingested

pytestmark = pytest.mark.integration


def endpoint(latency_s: float = 0.0, *, fail: bool = False, hang_first_s: float = 0.0) -> FastAPI:
    """The `logprobs` stub, answering after `latency_s`; or always 500; or hanging once per prompt.

    `app.state.requests` counts chat requests that reached it.
    """
    app = stub_app("logprobs", latency_s=latency_s)
    seen: set[str] = set()

    @app.middleware("http")
    async def behave(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not request.url.path.endswith("/chat/completions"):
            return await call_next(request)
        if fail:
            app.state.requests += 1
            error = {"message": "boom", "type": "server_error", "param": None, "code": None}
            return JSONResponse({"error": error}, status_code=500)
        digest = hashlib.sha256(await request.body()).hexdigest()
        if hang_first_s and digest not in seen:
            seen.add(digest)
            app.state.requests += 1
            await asyncio.sleep(hang_first_s)  # the client gave up long before
            return JSONResponse({}, status_code=504)
        return await call_next(request)

    return app


def settings_for(
    kafka: KafkaSettings, tmp_path: Path, unique: Callable[[str], str], url: str, stall_s: float
) -> JudgeSettings:
    return JudgeSettings(
        endpoint_url=url,
        criteria=["helpfulness"],
        input_topic=unique("ingested"),
        output_topic=unique("judged"),
        review_topic=unique("review"),
        curated_topic=unique("curated"),
        consumer_group=unique("judge"),
        batch_size=8,
        concurrency=4,
        stall_timeout_s=stall_s,
        max_retries=0,
        kafka=kafka.model_copy(update={"max_poll_interval_ms": 4_000}),
        runtime=RuntimeSettings(data_dir=tmp_path),
    )


async def judge_all(
    settings: JudgeSettings,
    embedder: SentenceTransformerEmbedder,
    unique: Callable[[str], str],
    count: int,
    done: Callable[[list[InteractionJudged], list[KafkaMessage]], bool],
) -> tuple[list[InteractionJudged], list[KafkaMessage]]:
    """Publish `count` interactions, run the judge until `done`, then 1 s more."""
    kafka: KafkaSettings = settings.kafka
    ensure_topics(
        kafka,
        {settings.input_topic: 2, dead_letter(settings.input_topic): 1, settings.output_topic: 1},
    )
    app = create_app(
        settings,
        endpoint=OpenAIChatEndpoint(judge_client(settings, "test-key")),
        embedder=embedder,
        store=SqlJudgeStore(settings.database_url()),
        keys=KeyStore.for_runtime(settings.runtime, None),
    )
    probe = make_broker(kafka)
    judged: list[InteractionJudged] = []
    parked: list[KafkaMessage] = []

    @probe.subscriber(settings.output_topic, **consumer_options(kafka, group_id=unique("p")))  # type: ignore[untyped-decorator]
    async def collect(event: InteractionJudged) -> None:
        judged.append(event)

    @probe.subscriber(  # type: ignore[untyped-decorator]
        dead_letter(settings.input_topic), **consumer_options(kafka, group_id=unique("d"))
    )
    async def park(msg: KafkaMessage) -> None:
        parked.append(msg)

    events = [ingested(q, f"{a} ({i})") for i in range(count) for q, a in QA[:1]]
    async with probe, app.router.lifespan_context(app):
        await probe.start()
        for event in events:
            key = str(event.interaction.interaction_id).encode()
            await probe.publish(event, topic=settings.input_topic, key=key)
        await wait_for(lambda: done(judged, parked), timeout_s=45)
        await asyncio.sleep(1.0)  # nothing else should arrive
    return judged, parked


def messages(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


async def test_slow_endpoint_is_waited_for_and_nothing_is_abandoned(
    kafka_settings: KafkaSettings,
    unique: Callable[[str], str],
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    slow = endpoint(latency_s=5.0)
    with serve(slow) as url:
        settings = settings_for(kafka_settings, tmp_path, unique, url, stall_s=30)
        judged, parked = await judge_all(
            settings, embedder, unique, 6, lambda judged, _: len(judged) >= 6
        )

    assert len(judged) == 6
    assert len({j.interaction.interaction_id for j in judged}) == 6, "duplicate judgements"
    assert all(j.judgement.error is None for j in judged)
    assert parked == []
    # One request per interaction: no generation was thrown away and asked for again.
    assert slow.state.requests == 6
    # The batch outlived max.poll.interval.ms, and the consumer stayed in its group: no failed
    # commit, no rebalance (aiokafka logs both as errors).
    assert messages(caplog, "consumer kept in its group") >= 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert messages(caplog, "redelivered ingested event skipped") == 0
    assert messages(caplog, "transient judging failure") == 0


async def test_failing_endpoint_still_dead_letters_after_the_retry_budget(
    kafka_settings: KafkaSettings,
    unique: Callable[[str], str],
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
) -> None:
    failing = endpoint(fail=True)
    with serve(failing) as url:
        settings = settings_for(kafka_settings, tmp_path, unique, url, stall_s=30)
        judged, parked = await judge_all(
            settings, embedder, unique, 2, lambda _, parked: len(parked) >= 2
        )

    attempts = settings.kafka.retry_max_attempts
    assert judged == []
    assert len(parked) == 2
    assert {m.headers[ERROR_CLASS_HEADER] for m in parked} == {"InternalServerError"}
    assert {m.headers[ATTEMPTS_HEADER] for m in parked} == {str(attempts)}
    assert failing.state.requests == 2 * attempts


async def test_a_stalled_request_is_retried_not_dead_lettered(
    kafka_settings: KafkaSettings,
    unique: Callable[[str], str],
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
) -> None:
    hangs = endpoint(hang_first_s=8.0)
    with serve(hangs) as url:
        settings = settings_for(kafka_settings, tmp_path, unique, url, stall_s=2)
        judged, parked = await judge_all(
            settings, embedder, unique, 3, lambda judged, _: len(judged) >= 3
        )

    assert len(judged) == 3
    assert Counter(j.interaction.interaction_id for j in judged).most_common(1)[0][1] == 1
    assert parked == []
    assert hangs.state.requests == 3 + 3  # each hung once, then answered


def busy_endpoint(refusals: int) -> FastAPI:
    """The `logprobs` stub behind a full lane: the first `refusals` requests get 429."""
    app = stub_app("logprobs")
    app.state.refused = 0

    @app.middleware("http")
    async def full(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path.endswith("/chat/completions") and app.state.refused < refusals:
            app.state.refused += 1
            error = {"message": "lane full", "type": "rate_limit", "param": None, "code": None}
            return JSONResponse({"error": error}, status_code=429, headers={"retry-after": "0.2"})
        return await call_next(request)

    return app


async def test_429_lowers_concurrency_and_waits_without_failing() -> None:
    busy = busy_endpoint(refusals=3)
    with serve(busy) as url:
        client = AsyncOpenAI(base_url=url, api_key="k", timeout=10.0, max_retries=0)
        limited = LimitedEndpoint(OpenAIChatEndpoint(client), 8, stall_timeout_s=10)
        messages_ = [{"role": "user", "content": "[question] a [answer] a"}]
        completion = await limited.ask(messages_, CallOptions(), 0)

    assert "score" in completion.text
    assert busy.state.refused == 3
    assert limited.limit.limit == 2  # halved three times (8 -> 1), then one answer: 2
    assert limited.limit.in_flight == 0


async def test_429_for_longer_than_the_stall_timeout_is_a_stall() -> None:
    with serve(busy_endpoint(refusals=1_000)) as url:
        client = AsyncOpenAI(base_url=url, api_key="k", timeout=10.0, max_retries=0)
        limited = LimitedEndpoint(OpenAIChatEndpoint(client), 2, stall_timeout_s=1.0)
        with pytest.raises(EndpointStalled, match="JUDGE_STALL_TIMEOUT_S"):
            await limited.ask([{"role": "user", "content": "q"}], CallOptions(), 0)
