"""The real gateway process driven by the official openai client, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from uuid import UUID

import httpx
import openai
import pytest
from gateway_support import EventLog, Gateway, interaction_of, logprobs_of
from openai.types.chat import ChatCompletionMessageParam

from raftloop_core.topics import Topic

pytestmark = pytest.mark.integration
USER: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Refunds?"},
]


async def _captured_once(log: EventLog, completion_id: str) -> dict[str, Any]:
    interaction_id = interaction_of(completion_id)
    await log.wait_for(
        lambda: log.where(Topic.CHAT_COMPLETED, interaction_id=interaction_id),
        what=f"chat.completed for {interaction_id}",
    )
    await asyncio.sleep(0.5)  # anything published twice would be here by now
    found = log.where(Topic.CHAT_COMPLETED, interaction_id=interaction_id)
    assert len(found) == 1, found
    assert found[0].key == interaction_id.encode()
    return found[0].value


async def test_sync_completion_is_answered_and_captured_once(
    gateway: Gateway, gateway_events: EventLog, new_conversation: Callable[[], dict[str, str]]
) -> None:
    meta = new_conversation()
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="raftloop", messages=USER, max_tokens=6, temperature=0, user="u-1", metadata=meta
    )
    done = raw.parse()
    assert done.id == f"chatcmpl-{UUID(raw.headers['x-raftloop-interaction-id']).hex}"
    assert done.object == "chat.completion"
    assert done.choices[0].finish_reason in ("stop", "length")
    assert done.usage is not None
    assert done.usage.completion_tokens <= 6
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens

    event = await _captured_once(gateway_events, done.id)
    assert event["answer"] == done.choices[0].message.content
    assert event["conversation_id"] == meta["conversation_id"]
    assert event["messages"] == USER
    assert event["model"] == "raftloop"
    assert event["base_model"] == "tiny-llama"
    assert event["adapter_id"] is None
    assert event["key_id"] == "dev-client"
    assert event["tenant"] == "default"
    assert event["user"] == "u-1"
    assert event["metadata"] == meta
    assert event["usage"] == {
        "prompt_tokens": done.usage.prompt_tokens,
        "completion_tokens": done.usage.completion_tokens,
    }
    assert event["params"]["max_tokens"] == 6
    assert event["params"]["temperature"] == 0
    assert event["latency_ms"] > 0
    assert event["aborted"] is False


async def test_sync_stream_matches_the_captured_answer(
    gateway: Gateway, gateway_events: EventLog
) -> None:
    stream = gateway.client().chat.completions.create(
        model="raftloop",
        messages=USER,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        seed=7,
    )
    chunks = list(stream)
    ids = {c.id for c in chunks}
    assert len(ids) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens <= 8
    event = await _captured_once(gateway_events, ids.pop())
    assert event["answer"] == text
    assert event["params"]["seed"] == 7


async def test_async_completion_with_logprobs(gateway: Gateway, gateway_events: EventLog) -> None:
    client = gateway.aclient()
    done = await client.chat.completions.create(
        model="raftloop",
        messages=USER,
        max_completion_tokens=5,
        temperature=0.7,
        top_p=0.9,
        logprobs=True,
        top_logprobs=3,
    )
    content = logprobs_of(done.choices[0])
    assert done.usage is not None
    assert len(content) == done.usage.completion_tokens
    for token in content:
        assert token.logprob <= 0
        assert len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob >= token.top_logprobs[-1].logprob
    await _captured_once(gateway_events, done.id)
    await client.close()


async def test_async_stream_and_same_seed_gives_the_same_answer(
    gateway: Gateway, gateway_events: EventLog
) -> None:
    client = gateway.aclient()

    async def once() -> tuple[str, str]:
        stream = await client.chat.completions.create(
            model="raftloop", messages=USER, max_tokens=8, stream=True, seed=42, logprobs=True
        )
        parts, ident = [], ""
        async for chunk in stream:
            ident = chunk.id
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        return ident, "".join(parts)

    (first_id, first), (second_id, second) = await once(), await once()
    assert first == second
    assert first_id != second_id
    for ident in (first_id, second_id):
        await _captured_once(gateway_events, ident)
    await client.close()


async def test_stop_sequence_cuts_the_answer(gateway: Gateway) -> None:
    client = gateway.aclient()
    full = await client.chat.completions.create(
        model="raftloop", messages=USER, max_tokens=12, temperature=0
    )
    text = full.choices[0].message.content
    assert text is not None
    if len(text) < 4:
        pytest.skip("the tiny model answered too briefly to cut")
    stop = text[2:4]
    cut = await client.chat.completions.create(
        model="raftloop", messages=USER, max_tokens=12, temperature=0, stop=[stop]
    )
    assert cut.choices[0].message.content == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    await client.close()


async def test_an_aborted_stream_is_captured_with_what_was_sent(
    gateway: Gateway, gateway_events: EventLog
) -> None:
    body = {"model": "raftloop", "messages": USER, "max_tokens": 64, "stream": True}
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream(
            "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.auth("client")
        ) as response,
    ):
        interaction = response.headers["x-raftloop-interaction-id"]
        lines = 0
        async for line in response.aiter_lines():
            lines += bool(line)
            if lines >= 3:
                break  # the client goes away mid-stream
    event = await _captured_once(gateway_events, interaction)
    assert event["aborted"] is True
    assert event["finish_reason"] == "abort"
    assert event["usage"]["completion_tokens"] < 64


async def test_internal_callers_are_never_captured(
    gateway: Gateway, gateway_events: EventLog
) -> None:
    done = gateway.client("internal").chat.completions.create(
        model="raftloop", messages=USER, max_tokens=3
    )
    marker = gateway.client().chat.completions.create(model="raftloop", messages=USER, max_tokens=3)
    await _captured_once(gateway_events, marker.id)  # published after the internal one
    internal = interaction_of(done.id)
    assert gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=internal) == []


async def test_feedback_lands_on_its_topic(gateway: Gateway, gateway_events: EventLog) -> None:
    done = gateway.client().chat.completions.create(model="raftloop", messages=USER, max_tokens=3)
    response = httpx.post(
        f"{gateway.url}/v1/feedback",
        json={"interaction_id": done.id, "rating": 2, "correction": "Five days.", "comment": "no"},
        headers=gateway.auth("client"),
    )
    assert response.status_code == 202, response.text
    interaction = interaction_of(done.id)
    await gateway_events.wait_for(
        lambda: gateway_events.where(Topic.CHAT_FEEDBACK, interaction_id=interaction),
        what="feedback",
    )
    [event] = gateway_events.where(Topic.CHAT_FEEDBACK, interaction_id=interaction)
    assert event.value["feedback"]["rating"] == 2
    assert event.value["feedback"]["scale"] == "stars"
    assert event.value["feedback"]["correction"] == "Five days."
    assert event.value["key_id"] == "dev-client"
    assert event.key == interaction.encode()


def test_errors_use_the_openai_envelope_and_status(gateway: Gateway) -> None:
    client = gateway.client()
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-nope", messages=USER)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="raftloop", messages=USER, max_tokens=10_000)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="raftloop", messages=[])
    with pytest.raises(openai.BadRequestError, match="n"):
        client.chat.completions.create(model="raftloop", messages=USER, n=9)
    huge: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x" * 300_000}]
    with pytest.raises(openai.APIStatusError) as too_big:
        client.chat.completions.create(model="raftloop", messages=huge)
    assert too_big.value.status_code == 413
    long_prompt: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "refund " * 20_000}
    ]
    with pytest.raises(openai.APIStatusError) as too_long:
        client.chat.completions.create(model="raftloop", messages=long_prompt)
    assert too_long.value.status_code == 413
    with pytest.raises(openai.AuthenticationError):
        gateway.client().with_options(api_key="wrong").models.list()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", content=b"{not json", headers=gateway.auth("client")
    )
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_models_lists_alias_and_base(gateway: Gateway) -> None:
    models = {m.id: m for m in gateway.client().models.list().data}
    assert "raftloop" in models
    assert "tiny-llama" in models
    # Asking for the base by name serves the bare base model.
    done = gateway.client().chat.completions.with_raw_response.create(
        model="tiny-llama", messages=USER, max_tokens=2
    )
    assert done.headers["x-raftloop-adapter"] == "base"
