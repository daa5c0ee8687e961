"""Structured outputs and tools on SmolLM2 through the real gateway, with the openai client.

The oracles do not come from the gateway: `jsonschema` validates the answers, `json` parses the
tool arguments, and instructor builds typed objects from the responses as it would from OpenAI.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import instructor
import jsonschema  # type: ignore[import-untyped]  # ships no type information
import openai
import pytest
from gateway_support import Gateway, logprobs_of, start_gateway
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)
from openai.types.shared_params import ResponseFormatJSONSchema
from pydantic import BaseModel, Field

from raftloop_core.settings import KafkaSettings

pytestmark = pytest.mark.integration

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "minLength": 1, "maxLength": 30},
        "tags": {
            "type": "array",
            "items": {"type": "string", "enum": ["student", "teacher", "artist", "cook"]},
            "maxItems": 3,
        },
    },
    "required": ["name", "age", "city", "tags"],
    "additionalProperties": False,
}
PEOPLE = [
    "a baker in Lyon",
    "a retired teacher from Oslo",
    "a student who paints",
    "a chef in Rome",
    "a young pianist in Vienna",
    "a fisherman from Bergen",
    "a nurse in Madrid",
    "an old sailor",
    "a child who loves cooking",
    "a doctor in Cairo",
    "a painter in Paris",
    "a farmer from Iowa",
    "a poet in Dublin",
    "a pilot from Sydney",
    "a librarian in Prague",
    "a cyclist in Amsterdam",
    "a singer from Lagos",
    "a carpenter in Quebec",
    "a teacher who cooks",
    "an engineer in Seoul",
]
WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CLOCK: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the local time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 40}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
ASK_WEATHER: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather in Paris right now?"}
]


@pytest.fixture(scope="module")
def smol(
    smollm2_dir: Path, kafka_settings: KafkaSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gw = start_gateway(
        tmp_path_factory.mktemp("structured"),
        model_dir=smollm2_dir,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        env={"GATEWAY_MAX_TOKENS_LIMIT": "512", "GATEWAY_DEFAULT_MAX_TOKENS": "128"},
    )
    yield gw
    gw.stop()


def person_format(schema: dict[str, Any] = PERSON) -> ResponseFormatJSONSchema:
    return {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": schema, "strict": True},
    }


async def test_json_schema_output_validates_on_20_prompts(smol: Gateway) -> None:
    client = smol.aclient(timeout=600)

    async def ask(who: str) -> ChatCompletion:
        return await client.chat.completions.create(
            model="raftloop",
            messages=[{"role": "user", "content": f"Describe {who} as a person record."}],
            response_format=person_format(),
            temperature=0,
            max_tokens=160,
        )

    answers = await asyncio.gather(*(ask(who) for who in PEOPLE))
    for who, done in zip(PEOPLE, answers, strict=True):
        choice = done.choices[0]
        assert choice.finish_reason == "stop", (who, choice.message.content)
        assert choice.message.content is not None
        jsonschema.validate(json.loads(choice.message.content), PERSON)
        assert choice.message.tool_calls is None
    await client.close()


def test_json_object_parses(smol: Gateway) -> None:
    done = smol.client(timeout=600).chat.completions.create(
        model="raftloop",
        messages=[{"role": "user", "content": "Give the capital and country of France."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=256,
    )
    content = done.choices[0].message.content
    assert done.choices[0].finish_reason == "stop", content
    assert content is not None
    assert isinstance(json.loads(content), dict)


def arguments_of(done: ChatCompletion, tool: ChatCompletionFunctionToolParam) -> dict[str, Any]:
    [call] = done.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == tool["function"]["name"]
    arguments: dict[str, Any] = json.loads(call.function.arguments)
    jsonschema.validate(arguments, tool["function"]["parameters"])
    return arguments


def test_required_tool_choice_gives_a_parsable_call(smol: Gateway) -> None:
    done = smol.client(timeout=600).chat.completions.create(
        model="raftloop",
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=128,
    )
    assert done.choices[0].finish_reason == "tool_calls"
    assert done.choices[0].message.content is None
    arguments_of(done, WEATHER)


def test_a_named_function_is_the_one_called(smol: Gateway) -> None:
    done = smol.client(timeout=600).chat.completions.create(
        model="raftloop",
        messages=ASK_WEATHER,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=128,
    )
    assert done.choices[0].finish_reason == "tool_calls"
    arguments_of(done, CLOCK)


def test_auto_gives_either_text_or_parsable_calls(smol: Gateway) -> None:
    client = smol.client(timeout=600)
    hello: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello to Ann."}]
    for messages in (ASK_WEATHER, hello):
        done = client.chat.completions.create(
            model="raftloop",
            messages=messages,
            tools=[WEATHER, CLOCK],
            temperature=0,
            max_tokens=128,
        )
        choice = done.choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            assert choice.message.content is None
            for call in choice.message.tool_calls:
                assert call.type == "function"
                tool = {"get_weather": WEATHER, "get_time": CLOCK}[call.function.name]
                jsonschema.validate(
                    json.loads(call.function.arguments), tool["function"]["parameters"]
                )
        else:
            assert choice.finish_reason in ("stop", "length")
            assert choice.message.content
            assert "<tool_call>" not in choice.message.content


def test_streamed_tool_call_deltas_reassemble(smol: Gateway) -> None:
    client = smol.client(timeout=600)
    args: dict[str, Any] = {
        "model": "raftloop",
        "messages": ASK_WEATHER,
        "tools": [WEATHER, CLOCK],
        "tool_choice": "required",
        "temperature": 0,
        "max_tokens": 160,
    }
    whole = client.chat.completions.create(**args)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    deltas = 0
    for chunk in client.chat.completions.create(**args, stream=True):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        assert choice.delta.content in (None, "")
        for delta in choice.delta.tool_calls or []:
            deltas += 1
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            if delta.function is not None:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert deltas > len(calls)  # the arguments came in pieces, not in one final delta
    expected = [
        (c.function.name, json.loads(c.function.arguments))
        for c in whole.choices[0].message.tool_calls
    ]
    got = [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]
    assert got == expected
    assert all(c["id"].startswith("call_") for c in calls.values())


class Person(BaseModel):
    name: str = Field(max_length=30)
    age: int = Field(ge=0, le=120)


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA])
def test_instructor_gets_a_typed_object(smol: Gateway, mode: instructor.Mode) -> None:
    client = instructor.from_openai(smol.client(timeout=600), mode=mode)
    person = client.chat.completions.create(
        model="raftloop",
        response_model=Person,
        messages=[{"role": "user", "content": "Ann is a 31 year old baker. Extract her."}],
        temperature=0,
        max_tokens=128,
        max_retries=1,
    )
    assert isinstance(person, Person)
    assert person.name


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
    ],
)
def test_a_schema_feature_the_decoder_cannot_enforce_is_a_400(
    smol: Gateway, schema: dict[str, Any], named: str
) -> None:
    with pytest.raises(openai.BadRequestError, match=named) as refused:
        smol.client().chat.completions.create(
            model="raftloop",
            messages=[{"role": "user", "content": "Numbers?"}],
            response_format=person_format(schema),
            stream=True,  # refused before any chunk is sent
        )
    assert refused.value.status_code == 400
    tool: ChatCompletionFunctionToolParam = {
        "type": "function",
        "function": {"name": "pick", "parameters": {"type": "object", "properties": {"x": schema}}},
    }
    with pytest.raises(openai.BadRequestError, match=named):
        smol.client().chat.completions.create(
            model="raftloop", messages=ASK_WEATHER, tools=[tool], tool_choice="required"
        )


def test_a_schema_that_cannot_finish_in_max_tokens_ends_with_length(smol: Gateway) -> None:
    long_list = {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {"type": "string", "minLength": 20},
                "minItems": 40,
            }
        },
        "required": ["items"],
        "additionalProperties": False,
    }
    started = time.monotonic()
    done = smol.client(timeout=120).chat.completions.create(
        model="raftloop",
        messages=[{"role": "user", "content": "List things."}],
        response_format=person_format(long_list),
        temperature=0,
        max_tokens=24,
    )
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None
    assert done.usage.completion_tokens == 24
    assert time.monotonic() - started < 60


def test_n_greedy_choices_from_one_request(smol: Gateway) -> None:
    done = smol.client(timeout=600).chat.completions.create(
        model="raftloop",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        n=3,
        temperature=0,
        max_tokens=12,
        logprobs=True,
    )
    assert [c.index for c in done.choices] == [0, 1, 2]
    texts = {c.message.content for c in done.choices}
    assert len(texts) == 1
    assert "Paris" in (texts.pop() or "")
    # Usage counts the prompt once and the tokens of every choice.
    assert done.usage is not None
    assert done.usage.completion_tokens == sum(len(logprobs_of(c)) for c in done.choices)


@pytest.fixture(scope="module")
def front(
    smol: Gateway,
    smollm2_dir: Path,
    kafka_settings: KafkaSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """A gateway whose backend is `smol` as an upstream OpenAI-compatible server."""
    gw = start_gateway(
        tmp_path_factory.mktemp("structured-front"),
        model_dir=smollm2_dir,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        env={
            "GATEWAY_BACKEND": "upstream",
            "GATEWAY_UPSTREAM_URL": f"{smol.url}/v1",
            "GATEWAY_UPSTREAM_API_KEY": smol.keys["internal"],
            "GATEWAY_UPSTREAM_MODEL": next(
                m.id for m in smol.client().models.list().data if getattr(m, "kind", None) == "base"
            ),
            "GATEWAY_MAX_TOKENS_LIMIT": "512",
        },
    )
    yield gw
    gw.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_tools_and_n_pass_through_an_upstream_server(front: Gateway, stream: bool) -> None:
    args: dict[str, Any] = {
        "model": "raftloop",
        "messages": ASK_WEATHER,
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 0,
        "max_tokens": 128,
        "n": 2,
    }
    client = front.client(timeout=600)
    if not stream:
        done = client.chat.completions.create(**args)
        assert [c.index for c in done.choices] == [0, 1]
        for choice in done.choices:
            assert choice.finish_reason == "tool_calls"
            [call] = choice.message.tool_calls
            jsonschema.validate(
                json.loads(call.function.arguments), WEATHER["function"]["parameters"]
            )
        return
    names: dict[int, str] = {}
    arguments: dict[int, str] = {0: "", 1: ""}
    finish: dict[int, str] = {}
    for chunk in client.chat.completions.create(**args, stream=True):
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                names[choice.index] = (
                    delta.function.name if delta.function else None
                ) or names.get(choice.index, "")
                arguments[choice.index] += (
                    delta.function.arguments if delta.function else ""
                ) or ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert finish == {0: "tool_calls", 1: "tool_calls"}
    assert names == {0: "get_weather", 1: "get_weather"}
    for text in arguments.values():
        jsonschema.validate(json.loads(text), WEATHER["function"]["parameters"])
