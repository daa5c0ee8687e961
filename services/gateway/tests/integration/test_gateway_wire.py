"""Wire details against the real gateway process: refusals, ids, stream chunks, request ids.

Every parameter the gateway does not implement gets a 400 naming it (never accepted and
ignored); the response shapes follow OpenAI's, checked on the raw bytes where the openai client
would hide a difference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from uuid import UUID

import httpx
import openai
import pytest
from gateway_support import EventLog, Gateway
from openai.types.chat import (
    ChatCompletionContentPartParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)

from raftloop_core.topics import Topic

pytestmark = pytest.mark.integration
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Refunds?"}]
WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

# (parameter, a value the gateway cannot honour, its neutral value)
UNSUPPORTED = [
    ("frequency_penalty", 0.5, 0),
    ("presence_penalty", -1.0, 0.0),
    ("logit_bias", {"42": 10}, {}),
    ("functions", [WEATHER["function"]], []),
    ("function_call", "auto", "none"),
    ("audio", {"voice": "alloy", "format": "wav"}, None),
    ("modalities", ["text", "audio"], ["text"]),
    ("prediction", {"type": "content", "content": "x"}, None),
    ("web_search_options", {}, None),
    ("reasoning_effort", "high", None),
    ("verbosity", "low", None),
    ("service_tier", "flex", "auto"),
    ("store", True, False),
    ("prompt_cache_key", "k", None),
    ("top_k", 5, -1),
    ("min_p", 0.1, 0),
    ("repetition_penalty", 1.3, 1),
    ("best_of", 2, 1),
    ("guided_json", {"type": "object"}, None),
]


def post(gateway: Gateway, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "raftloop", "messages": ASK, "max_tokens": 2, **body},
        headers=gateway.auth("client") | headers,
        timeout=60,
    )


def refused(gateway: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    response = post(gateway, body)
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize(("name", "value", "_neutral"), UNSUPPORTED)
def test_each_unsupported_parameter_is_refused_by_name(
    gateway: Gateway, name: str, value: object, _neutral: object
) -> None:
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="raftloop", messages=ASK, max_tokens=2, extra_body={name: value}
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == name
    assert name in error["message"]
    assert "Supported:" in error["message"]  # says what to use instead


def test_neutral_values_of_unsupported_parameters_are_accepted(gateway: Gateway) -> None:
    neutral = {name: value for name, _, value in UNSUPPORTED}
    response = post(gateway, neutral | {"max_tokens": 1})
    assert response.status_code == 200, response.text


def test_unknown_parameters_are_refused_not_ignored(gateway: Gateway) -> None:
    error = refused(gateway, {"temprature": 0})
    assert error["param"] == "temprature"
    assert "unknown parameter" in error["message"]
    error = refused(gateway, {"stream": True, "stream_options": {"include_obfuscation": True}})
    assert error["param"] == "stream_options.include_obfuscation"
    message = {"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}}
    assert refused(gateway, {"messages": [message]})["param"] == "messages[0].cache_control"


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "f"}},
    ],
)
def test_non_text_content_parts_are_refused_never_dropped(
    gateway: Gateway, part: ChatCompletionContentPartParam
) -> None:
    content: list[ChatCompletionContentPartParam] = [
        {"type": "text", "text": "What is in this?"},
        part,
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().chat.completions.create(
            model="raftloop", messages=[{"role": "user", "content": content}], max_tokens=2
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "messages[0].content[1].type"
    assert "image and audio input are not supported by this model" in error["message"]


def test_text_parts_are_joined(gateway: Gateway) -> None:
    parts = [{"type": "text", "text": "Refu"}, {"type": "text", "text": "nds?"}]
    response = post(gateway, {"messages": [{"role": "user", "content": parts}]})
    assert response.status_code == 200, response.text


def test_parameters_that_need_another_are_refused(gateway: Gateway) -> None:
    client = gateway.client()
    with pytest.raises(openai.BadRequestError, match="logprobs") as top:
        client.chat.completions.create(model="raftloop", messages=ASK, top_logprobs=2)
    assert isinstance(top.value.body, dict)
    assert top.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError, match="stream") as options:
        client.chat.completions.create(
            model="raftloop", messages=ASK, stream_options={"include_usage": True}
        )
    assert isinstance(options.value.body, dict)
    assert options.value.body["param"] == "stream_options"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
        (
            {
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
            },
            "tool_choice",
        ),
        ({"tools": [WEATHER], "tool_choice": "any"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"tools": [WEATHER], "response_format": {"type": "json_object"}},
            "response_format",
        ),
        ({"n": 9}, "n"),
        ({"n": 0}, "n"),
        ({"messages": [{"role": "tool", "content": "18 C"}]}, "messages[0].tool_call_id"),
        (
            {"messages": [{"role": "user", "content": "x", "tool_call_id": "c"}]},
            "messages[0].tool_call_id",
        ),
    ],
)
def test_tool_and_format_misuse_is_a_400_naming_the_parameter(
    gateway: Gateway, body: dict[str, Any], param: str
) -> None:
    assert refused(gateway, body)["param"] == param


async def test_ids_and_created_follow_openai(gateway: Gateway, gateway_events: EventLog) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="raftloop", messages=ASK, max_tokens=3
    )
    done = raw.parse()
    interaction = UUID(raw.headers["x-raftloop-interaction-id"])
    assert done.id == f"chatcmpl-{interaction.hex}"
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", done.id)
    assert isinstance(done.created, int)
    stream = gateway.client().chat.completions.create(
        model="raftloop", messages=ASK, max_tokens=6, stream=True
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert len({c.created for c in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-")
    # Feedback takes the completion's id as it is.
    response = httpx.post(
        f"{gateway.url}/v1/feedback",
        json={"interaction_id": done.id, "rating": 1},
        headers=gateway.auth("client"),
    )
    assert response.status_code == 202, response.text
    assert response.json()["interaction_id"] == str(interaction)
    await gateway_events.wait_for(
        lambda: gateway_events.where(Topic.CHAT_FEEDBACK, interaction_id=str(interaction)),
        what="feedback on a chatcmpl id",
    )


def sse_events(gateway: Gateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    full = {"model": "raftloop", "messages": ASK, "stream": True, **body}
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json=full,
        headers=gateway.auth("client"),
        timeout=60,
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_stream_chunks_say_finish_reason_null_until_the_last(gateway: Gateway) -> None:
    events = sse_events(gateway, {"max_tokens": 6, "stream_options": {"include_usage": True}})
    *chunks, usage = events
    for chunk in chunks[:-1]:
        [choice] = chunk["choices"]
        assert "finish_reason" in choice
        assert choice["finish_reason"] is None
        assert set(choice) == {"index", "delta", "logprobs", "finish_reason"}
        assert "usage" not in chunk  # left out, as OpenAI does, until the usage chunk
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] <= 6
    assert len({e["created"] for e in events}) == 1
    assert len({e["id"] for e in events}) == 1


def test_a_request_id_is_echoed_or_made(gateway: Gateway) -> None:
    mine = post(gateway, {}, **{"x-request-id": "client-req-42"})
    assert mine.headers["x-request-id"] == "client-req-42"
    made = post(gateway, {})
    assert re.fullmatch(r"req_[0-9a-f]{32}", made.headers["x-request-id"])
    odd = post(gateway, {}, **{"x-request-id": "no spaces\tallowed" + "x" * 200})
    assert odd.headers["x-request-id"].startswith("req_")
    error = post(gateway, {"frequency_penalty": 1}, **{"x-request-id": "bad-req-1"})
    assert error.status_code == 400
    assert error.headers["x-request-id"] == "bad-req-1"


async def test_tool_turns_are_accepted_and_captured_faithfully(
    gateway: Gateway, gateway_events: EventLog
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    ]
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="raftloop",
        messages=messages,
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=3,
        safety_identifier="user-7",
    )
    done = raw.parse()
    assert done.choices[0].message.tool_calls is None  # "none": text only
    interaction = raw.headers["x-raftloop-interaction-id"]
    await gateway_events.wait_for(
        lambda: gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=interaction)
    )
    [event] = gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=interaction)
    captured = event.value["messages"]
    assert [m["role"] for m in captured] == ["system", "user", "assistant", "user"]
    assert '"name": "get_weather"' in captured[0]["content"]  # the tools, described
    assert captured[2]["content"] == (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    )
    assert captured[3]["content"] == "<tool_response>\n18 C, sunny\n</tool_response>"
    assert event.value["user"] == "user-7"


async def test_n_choices_are_each_captured(
    gateway: Gateway, gateway_events: EventLog, new_conversation: Callable[[], dict[str, str]]
) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="raftloop",
        messages=ASK,
        max_tokens=3,
        n=2,
        temperature=0,
        metadata=new_conversation(),
    )
    done = raw.parse()
    assert [c.index for c in done.choices] == [0, 1]
    assert done.choices[0].message.content == done.choices[1].message.content
    first = raw.headers["x-raftloop-interaction-id"]
    await gateway_events.wait_for(
        lambda: gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=first)
    )
    [event] = gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=first)
    conversation = event.value["conversation_id"]
    await gateway_events.wait_for(
        lambda: len(gateway_events.where(Topic.CHAT_COMPLETED, conversation_id=conversation)) >= 2
    )
    both = gateway_events.where(Topic.CHAT_COMPLETED, conversation_id=conversation)
    assert len({e.value["interaction_id"] for e in both}) == 2
    assert {e.value["answer"] for e in both} == {done.choices[0].message.content}
    tokens = sum(e.value["usage"]["completion_tokens"] for e in both)
    assert done.usage is not None
    assert tokens == done.usage.completion_tokens


def test_n_choices_stream_with_their_own_index_and_finish(gateway: Gateway) -> None:
    events = sse_events(gateway, {"max_tokens": 4, "n": 3, "temperature": 0})
    finished = {}
    text: dict[int, str] = {0: "", 1: "", 2: ""}
    for event in events:
        [choice] = event["choices"]
        assert choice["index"] not in finished  # nothing after a choice's last chunk
        text[choice["index"]] += choice["delta"].get("content", "")
        if choice["finish_reason"] is not None:
            finished[choice["index"]] = choice["finish_reason"]
    assert set(finished) == {0, 1, 2}
    assert text[0] == text[1] == text[2]
