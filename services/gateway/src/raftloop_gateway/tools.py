"""Tools and output formats on the embedded model: the prompt text, and calls read back out.

Pure: no framework imports and no I/O. The layout is Hermes' (`domain.TOOL_CALL_OPEN`): each
call is `<tool_call>{"name": .., "arguments": {..}}</tool_call>`, several separated by a newline;
tool results go back to the model as `<tool_response>` user turns.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from raftloop_gateway.domain import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ToolCall, ToolSpec

TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"
CHOICES = ("auto", "required", "none")
"""`tool_choice` strings; anything else names a function."""


def new_call_id() -> str:
    """An OpenAI-style tool call id."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def tools_instruction(tools: Sequence[ToolSpec], choice: str, *, parallel: bool = True) -> str:
    """The system-turn text that offers `tools` to the model (Hermes style, compact)."""
    listed = "\n".join(
        _dumps(
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
        )
        for t in tools
    )
    lines = [
        "You can call functions. Their signatures, one per line:",
        f"<tools>\n{listed}\n</tools>",
    ]
    if choice == "none":
        lines.append("Do not call any function now; answer in text.")
        return "\n".join(lines)
    how = f'{TOOL_CALL_OPEN}{{"name": <function-name>, "arguments": <arguments-object>}}'
    lines.append(f"To call a function, answer with {how}{TOOL_CALL_CLOSE}.")
    if parallel:
        lines.append("For several calls, put each call on its own line.")
    if choice == "auto":
        lines.append("If no function helps, answer the user directly in text instead.")
    elif choice == "required":
        lines.append("You must call a function." if parallel else "Call exactly one function.")
    else:
        lines.append(f"Call the function {choice}.")
    return "\n".join(lines)


def format_instruction(
    schema: Mapping[str, object] | None, *, name: str | None = None, description: str | None = None
) -> str:
    """The system-turn text that asks for JSON output (the decoder enforces it as well)."""
    if schema is None:
        return "Answer with one JSON object and nothing else."
    about = f" ({name}{': ' + description if description else ''})" if name else ""
    return (
        f"Answer with one JSON object and nothing else, matching this JSON schema{about}:\n"
        f"{_dumps(schema)}"
    )


def call_text(name: str, arguments: str) -> str:
    """An assistant's earlier tool call as the model writes it."""
    try:
        args: object = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        args = arguments  # kept as the client sent it: a JSON string of the broken text
    return f"{TOOL_CALL_OPEN}{_dumps({'name': name, 'arguments': args})}{TOOL_CALL_CLOSE}"


def tool_response_text(content: str) -> str:
    """A tool's result as the user turn the model reads."""
    return f"{TOOL_RESPONSE_OPEN}\n{content}\n{TOOL_RESPONSE_CLOSE}"


@dataclass(frozen=True)
class TextDelta:
    """Answer text for `message.content`."""

    text: str


@dataclass(frozen=True)
class CallStart:
    """A new tool call: its position in `tool_calls`, its id and the function's name."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    """More of a tool call's arguments (JSON text)."""

    index: int
    text: str


ToolEvent = TextDelta | CallStart | ArgumentsDelta

# A call written name first, up to where its arguments' value starts.
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')


@dataclass
class _Call:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


@dataclass
class _Value:
    """Finds where one JSON value ends in text that arrives in parts."""

    started: bool = False
    depth: int = 0
    in_string: bool = False
    escaped: bool = False
    scalar: bool = False

    def take(self, text: str) -> int | None:
        """How much of `text` belongs to the value, or None if it has not ended yet."""
        for i, ch in enumerate(text):
            if not self.started:
                self._begin(ch)
            elif self.scalar:
                if ch in ",}] \t\r\n":
                    return i  # what ends a number or a literal is not part of it
            elif self._ends_with(ch):
                return i + 1
        return None

    def _begin(self, ch: str) -> None:
        """Skip leading space; the first other character says what kind of value this is."""
        if ch.isspace():
            return
        self.started = True
        if ch in "{[":
            self.depth = 1
        elif ch == '"':
            self.in_string = True
        else:
            self.scalar = True

    def _ends_with(self, ch: str) -> bool:
        """Take one character of a string or a container; whether the value ends with it."""
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif ch == "\\":
                self.escaped = True
            elif ch == '"':
                self.in_string = False
                return self.depth == 0
            return False
        if ch == '"':
            self.in_string = True
        elif ch in "{[":
            self.depth += 1
        elif ch in "}]":
            self.depth -= 1
            return self.depth == 0
        return False


class ToolCallReader:
    """Reads generated text into answer text and tool calls, incrementally (for streaming).

    `auto`: the answer may be text instead; text is held back only while it could still be the
    start of `<tool_call>`. `max_calls`: calls after that many are dropped
    (`parallel_tool_calls: false`). Arguments stream as they are generated when the call is
    written name first (the constrained layout); otherwise a call is sent when it closes.
    """

    def __init__(
        self,
        *,
        auto: bool = True,
        max_calls: int | None = None,
        ids: Callable[[], str] = new_call_id,
    ) -> None:
        self._ids = ids
        self._max_calls = max_calls
        self._state = "start" if auto else "between"
        self._buf = ""
        self._value = _Value()
        self._calls: list[_Call] = []
        self._text: list[str] = []

    @property
    def calls(self) -> list[ToolCall]:
        """The calls read so far (the last one may still be incomplete)."""
        return [ToolCall(c.id, c.name, "".join(c.arguments)) for c in self._calls]

    @property
    def content(self) -> str | None:
        """The answer text; None when the answer is tool calls only."""
        text = "".join(self._text)
        return None if self._calls and not text.strip() else text

    def feed(self, text: str) -> list[ToolEvent]:
        """Take generated text; return what can be sent now."""
        self._buf += text
        events: list[ToolEvent] = []
        while self._buf:
            before = (self._state, len(self._buf))
            getattr(self, f"_{self._state}_")(events)
            if (self._state, len(self._buf)) == before:
                break  # waiting for more text
        return events

    def close(self) -> list[ToolEvent]:
        """Generation ended: send what is still held back."""
        events: list[ToolEvent] = []
        rest, self._buf = self._buf, ""
        if self._state == "start" or (self._state == "between" and not self._calls):
            if rest:
                events.append(self._say(rest))
        elif self._state == "head":
            # Cut off before the arguments started (max_tokens): keep the name if it was written.
            found = _NAME.search(rest)
            if found:
                events.append(self._start(_unquote(found.group(1))))
        self._state = "done"
        return events

    # ---------------------------------------------------------------- states

    def _say(self, text: str) -> TextDelta:
        self._text.append(text)
        return TextDelta(text)

    def _start(self, name: str) -> CallStart:
        call = _Call(self._ids(), name)
        self._calls.append(call)
        return CallStart(len(self._calls) - 1, call.id, name)

    # Each `_<state>_` takes the events list: feed() calls the current state's with it.

    def _start_(self, events: list[ToolEvent]) -> None:  # noqa: ARG002
        head = self._buf.lstrip()
        if head.startswith(TOOL_CALL_OPEN):
            self._state = "between"
        elif not TOOL_CALL_OPEN.startswith(head):
            self._state = "text"

    def _text_(self, events: list[ToolEvent]) -> None:
        events.append(self._say(self._buf))
        self._buf = ""

    def _between_(self, events: list[ToolEvent]) -> None:  # noqa: ARG002
        head = self._buf.lstrip()
        if head.startswith(TOOL_CALL_OPEN):
            self._buf = head[len(TOOL_CALL_OPEN) :]
            self._state = "head"
        elif not TOOL_CALL_OPEN.startswith(head):
            # Not a call: text when no call came yet, else trailing text after the calls.
            self._state = "text" if not self._calls else "done"
        elif not head:
            self._buf = ""

    def _head_(self, events: list[ToolEvent]) -> None:
        found = _HEAD.match(self._buf)
        if found:
            events.append(self._start(_unquote(found.group(1))))
            self._buf = self._buf[found.end() :]
            self._value = _Value()
            self._state = "arguments"
            return
        end = self._buf.find(TOOL_CALL_CLOSE)
        if end < 0:
            return  # wait: the name and arguments have not been written yet
        # Another layout (arguments first, say): send the whole call once it closed.
        whole, self._buf = self._buf[:end], self._buf[end + len(TOOL_CALL_CLOSE) :]
        self._state = "between"
        try:
            parsed = json.loads(whole)
        except ValueError:
            return
        if isinstance(parsed, dict) and isinstance(parsed.get("name"), str):
            start = self._start(parsed["name"])
            args = parsed.get("arguments", {})
            text = args if isinstance(args, str) else _dumps(args)
            self._calls[-1].arguments.append(text)
            events += [start, ArgumentsDelta(start.index, text)]
            self._after_call()

    def _arguments_(self, events: list[ToolEvent]) -> None:
        end = self._value.take(self._buf)
        part = self._buf if end is None else self._buf[:end]
        if part.strip() or (part and self._calls[-1].arguments):
            if not self._calls[-1].arguments:
                part = part.lstrip()
            self._calls[-1].arguments.append(part)
            events.append(ArgumentsDelta(len(self._calls) - 1, part))
        if end is None:
            self._buf = ""
            return
        self._buf = self._buf[end:]
        self._state = "tail"

    def _tail_(self, events: list[ToolEvent]) -> None:  # noqa: ARG002
        end = self._buf.find(TOOL_CALL_CLOSE)
        if end < 0:
            self._buf = self._buf[-(len(TOOL_CALL_CLOSE) - 1) :]  # could start the closing tag
            return
        self._buf = self._buf[end + len(TOOL_CALL_CLOSE) :]
        self._state = "between"
        self._after_call()

    def _after_call(self) -> None:
        if self._max_calls is not None and len(self._calls) >= self._max_calls:
            self._state = "done"

    def _done_(self, events: list[ToolEvent]) -> None:  # noqa: ARG002
        self._buf = ""


def _unquote(raw: str) -> str:
    try:
        value = json.loads(f'"{raw}"')
    except ValueError:
        return raw
    return value if isinstance(value, str) else raw


def read_tool_calls(
    text: str,
    *,
    auto: bool = True,
    max_calls: int | None = None,
    ids: Callable[[], str] = new_call_id,
) -> tuple[str | None, list[ToolCall]]:
    """A whole answer as (content, tool calls): the same reading as when streamed."""
    reader = ToolCallReader(auto=auto, max_calls=max_calls, ids=ids)
    reader.feed(text)
    reader.close()
    return reader.content, reader.calls
