"""Tool prompts and reading tool calls out of generated text, whole and streamed."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import pytest

from raftloop_gateway.domain import ToolCall, ToolSpec
from raftloop_gateway.tools import (
    ArgumentsDelta,
    CallStart,
    TextDelta,
    ToolCallReader,
    ToolEvent,
    call_text,
    format_instruction,
    read_tool_calls,
    tool_response_text,
    tools_instruction,
)

WEATHER = ToolSpec(
    "get_weather",
    "Current weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TWO_CALLS = (
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Lyon \\"Centre\\" {x}"}}'
    "</tool_call>"
)


def ids() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def streamed(text: str, size: int, **kwargs: object) -> list[ToolEvent]:
    reader = ToolCallReader(ids=ids(), **kwargs)  # type: ignore[arg-type]
    events: list[ToolEvent] = []
    for i in range(0, len(text), size):
        events += reader.feed(text[i : i + size])
    return events + reader.close()


def assemble(events: list[ToolEvent]) -> tuple[str, list[ToolCall]]:
    """What an OpenAI client does with the deltas."""
    text, calls = "", {}
    for event in events:
        if isinstance(event, TextDelta):
            text += event.text
        elif isinstance(event, CallStart):
            calls[event.index] = [event.id, event.name, ""]
        else:
            calls[event.index][2] += event.text
    return text, [ToolCall(*calls[i]) for i in sorted(calls)]


def test_two_calls_are_read_with_their_arguments() -> None:
    content, calls = read_tool_calls(TWO_CALLS, ids=ids())
    assert content is None
    assert [(c.id, c.name) for c in calls] == [("call_0", "get_weather"), ("call_1", "get_weather")]
    assert [json.loads(c.arguments) for c in calls] == [
        {"city": "Paris"},
        {"city": 'Lyon "Centre" {x}'},
    ]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_streamed_deltas_reassemble_to_the_whole_reading(size: int) -> None:
    whole = read_tool_calls(TWO_CALLS, ids=ids())
    events = streamed(TWO_CALLS, size)
    assert assemble(events) == ("", whole[1])
    assert not any(isinstance(e, TextDelta) for e in events)


def test_arguments_stream_before_the_call_closes() -> None:
    reader = ToolCallReader(ids=ids())
    events = reader.feed('<tool_call>{"name": "get_weather", "arguments": {"ci')
    assert events == [CallStart(0, "call_0", "get_weather"), ArgumentsDelta(0, '{"ci')]
    assert reader.feed('ty": "Rome"}}</tool_call>') == [ArgumentsDelta(0, 'ty": "Rome"}')]


def test_text_in_auto_mode_is_held_only_while_it_could_open_a_call() -> None:
    reader = ToolCallReader(ids=ids())
    assert reader.feed(" <tool") == []
    assert reader.feed("box> is") == [TextDelta(" <toolbox> is")]
    assert reader.feed(" here") == [TextDelta(" here")]
    assert reader.close() == []
    assert reader.content == " <toolbox> is here"
    assert reader.calls == []


def test_plain_text_passes_at_once() -> None:
    reader = ToolCallReader(ids=ids())
    assert reader.feed("Hello") == [TextDelta("Hello")]


def test_a_held_prefix_is_text_when_generation_ends() -> None:
    assert read_tool_calls("<tool_c") == ("<tool_c", [])


def test_parallel_false_keeps_the_first_call() -> None:
    content, calls = read_tool_calls(TWO_CALLS, max_calls=1, ids=ids())
    assert [json.loads(c.arguments) for c in calls] == [{"city": "Paris"}]
    assert content is None


def test_arguments_first_layout_is_sent_when_the_call_closes() -> None:
    text = '<tool_call>{"arguments": {"city": "Oslo"}, "name": "get_weather"}</tool_call>'
    events = streamed(text, 4)
    assert events == [
        CallStart(0, "call_0", "get_weather"),
        ArgumentsDelta(0, '{"city": "Oslo"}'),
    ]


def test_a_call_cut_by_max_tokens_keeps_what_was_written() -> None:
    _, calls = read_tool_calls('<tool_call>{"name": "get_weather", "arguments": {"city": "Pa')
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Pa')]
    _, named = read_tool_calls('<tool_call>{"name": "get_weather"')
    assert [(c.name, c.arguments) for c in named] == [("get_weather", "")]


def test_required_mode_reads_calls_without_waiting_for_text() -> None:
    reader = ToolCallReader(auto=False, ids=ids())
    assert reader.feed("<tool_call>") == []
    assert reader.feed('{"name": "f", "arguments": {}}</tool_call>') == [
        CallStart(0, "call_0", "f"),
        ArgumentsDelta(0, "{}"),
    ]


def test_trailing_text_after_calls_is_not_content() -> None:
    content, calls = read_tool_calls(TWO_CALLS + "\nDone.", ids=ids())
    assert content is None
    assert len(calls) == 2


def test_escaped_names_and_whitespace_inside_the_tags() -> None:
    text = (
        '<tool_call>\n{ "name" : "a\\u0062c", "arguments" : { "x" : [1, {"y": "}"}] } }\n'
        "</tool_call>"
    )
    _, [call] = read_tool_calls(text, ids=ids())
    assert assemble(streamed(text, 5)) == ("", [call])
    assert call.name == "abc"
    assert json.loads(call.arguments) == {"x": [1, {"y": "}"}]}


def test_history_renders_in_the_layout_the_reader_reads() -> None:
    text = call_text("get_weather", '{"city": "Paris"}')
    _, [call] = read_tool_calls(text)
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert tool_response_text("18 C") == "<tool_response>\n18 C\n</tool_response>"


def test_instructions_name_the_tools_and_the_choice() -> None:
    auto = tools_instruction([WEATHER], "auto")
    assert '"name": "get_weather"' in auto
    assert "<tool_call>" in auto
    assert "directly in text" in auto
    assert "must call" in tools_instruction([WEATHER], "required")
    assert "exactly one" in tools_instruction([WEATHER], "required", parallel=False)
    assert "Call the function get_weather." in tools_instruction([WEATHER], "get_weather")
    none = tools_instruction([WEATHER], "none")
    assert "get_weather" in none
    assert "Do not call" in none
    assert "<tool_call>" not in none
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert json.dumps(schema) in format_instruction(schema, name="Thing", description="A thing")
    assert format_instruction(None) == "Answer with one JSON object and nothing else."
