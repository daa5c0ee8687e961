"""The OpenAI chat-completions wire format: requests, responses and stream chunks.

Requests are checked beyond their types in `check_request`: every parameter the gateway does not
implement gets a 400 that names it, unless it carries its neutral value (nothing is accepted and
then ignored).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from raftloop_gateway.domain import GatewayError

MAX_MESSAGES = 256
MAX_STOP = 4
MAX_N = 8
MAX_TOOLS = 64
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def _omit_none(value: object) -> bool:
    return value is None


class ContentPart(BaseModel):
    """A part of a message's content; only `text` parts are supported (checked later)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    text: str | None = None


class FunctionCall(BaseModel):
    """The function of an earlier tool call: its name and arguments (JSON text)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    arguments: str = ""


class WireToolCall(BaseModel):
    """A tool call of an earlier assistant turn, as the client sends it back."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: FunctionCall


class WireMessage(BaseModel):
    """A message as clients send it: content is a string or a list of text parts."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=64)
    tool_calls: list[WireToolCall] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(default=None, max_length=128)

    def text(self) -> str:
        """The message content as plain text (text parts joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)


class FunctionDef(BaseModel):
    """A function offered as a tool."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = Field(default=None, max_length=8192)
    parameters: dict[str, object] | None = None
    strict: bool | None = None


class ToolParam(BaseModel):
    """An entry of `tools`; only `function` tools are supported (checked later)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    function: FunctionDef | None = None


class JsonSchemaFormat(BaseModel):
    """`response_format.json_schema`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = Field(default=None, max_length=8192)
    schema_: dict[str, object] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """`response_format`: text, json_object or json_schema (checked later)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=64)
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(BaseModel):
    """`stream_options`: only `include_usage` is supported."""

    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = False


class ChatRequest(BaseModel):
    """`POST /v1/chat/completions` body; `check_request` refuses what is not implemented."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[WireMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    n: int | None = Field(default=1, ge=1, le=MAX_N)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[ToolParam] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: str | dict[str, object] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP or any(not s or len(s) > 64 for s in stops):
            raise ValueError(f"stop takes up to {MAX_STOP} non-empty strings of at most 64 chars")
        return value

    @property
    def stops(self) -> list[str]:
        """Stop sequences as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def choices(self) -> int:
        """`n`."""
        return self.n or 1

    @property
    def streaming(self) -> bool:
        """Whether the answer is streamed."""
        return bool(self.stream)

    @property
    def function_tools(self) -> list[FunctionDef]:
        """The offered functions (after `check_request`, every tool is one)."""
        return [t.function for t in self.tools or [] if t.function is not None]

    @property
    def choice(self) -> str:
        """`tool_choice` as "auto", "required", "none" or the forced function's name."""
        if isinstance(self.tool_choice, dict):
            return str(_get(self.tool_choice, "function", "name"))
        return self.tool_choice or ("auto" if self.tools else "none")


SUPPORTED = (
    "model, messages, stream, stream_options.include_usage, max_tokens, max_completion_tokens, "
    "temperature, top_p, stop, seed, n (1..8), logprobs, top_logprobs, tools (function), "
    "tool_choice, parallel_tool_calls, response_format (text, json_object, json_schema), user, "
    "safety_identifier, metadata"
)


def _is(*values: object) -> Callable[[object], bool]:
    return lambda v: any((v == x and type(v) is not bool) or v is x for x in values)


# Parameters OpenAI (or vLLM) defines that this gateway does not implement: each is refused
# unless it carries its neutral value (null always counts as neutral).
UNSUPPORTED: Mapping[str, tuple[Callable[[object], bool], str, str]] = {
    "frequency_penalty": (_is(0), "0", ""),
    "presence_penalty": (_is(0), "0", ""),
    "repetition_penalty": (_is(1), "1", ""),
    "logit_bias": (_is({}), "{}", ""),
    "functions": (_is([]), "[]", "use tools"),
    "function_call": (_is("none"), '"none"', "use tool_choice"),
    "audio": (_is(), "null", "audio output is not supported by this model"),
    "modalities": (_is(["text"]), '["text"]', "text is the only output"),
    "prediction": (_is(), "null", ""),
    "web_search_options": (_is(), "null", ""),
    "reasoning_effort": (_is(), "null", "this model does not reason in a separate channel"),
    "verbosity": (_is(), "null", ""),
    "service_tier": (_is("auto", "default"), '"auto"', "there is one tier"),
    "store": (_is(False), "false", "answers are captured for review, not stored for the API"),
    "prompt_cache_key": (_is(), "null", ""),
    "prompt_cache_retention": (_is(), "null", ""),
    "top_k": (_is(0, -1), "-1", ""),
    "min_p": (_is(0), "0", ""),
    "min_tokens": (_is(0), "0", ""),
    "best_of": (_is(1), "1", "use n"),
    "use_beam_search": (_is(False), "false", ""),
    "length_penalty": (_is(1), "1", ""),
    "ignore_eos": (_is(False), "false", ""),
    "echo": (_is(False), "false", ""),
    "include_stop_str_in_output": (_is(False), "false", ""),
    "skip_special_tokens": (_is(True), "true", ""),
    "add_generation_prompt": (_is(True), "true", ""),
    "continue_final_message": (_is(False), "false", ""),
    "chat_template": (_is(), "null", ""),
    "chat_template_kwargs": (_is({}), "{}", ""),
    "guided_json": (_is(), "null", "use response_format"),
    "guided_regex": (_is(), "null", ""),
    "guided_choice": (_is(), "null", ""),
    "guided_grammar": (_is(), "null", ""),
    "structured_outputs": (_is(), "null", "use response_format"),
}
MESSAGE_UNSUPPORTED: Mapping[str, tuple[Callable[[object], bool], str, str]] = {
    "refusal": (_is(), "null", ""),
    "annotations": (_is([]), "[]", ""),
    "audio": (_is(), "null", "audio is not supported by this model"),
    "function_call": (_is(), "null", "use tool_calls"),
    "reasoning_content": (_is(), "null", ""),
}
MEDIA = "image and audio input are not supported by this model; send text parts only"


def _get(mapping: Mapping[str, object], *path: str) -> object:
    value: object = mapping
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _refuse_extra(
    extra: Mapping[str, object] | None,
    table: Mapping[str, tuple[Callable[[object], bool], str, str]],
    where: str,
    supported: str,
) -> None:
    for name, value in (extra or {}).items():
        param = f"{where}{name}"
        if name not in table:
            raise GatewayError(f"unknown parameter {param!r}; supported: {supported}", param=param)
        neutral, default, hint = table[name]
        if value is not None and not neutral(value):
            raise GatewayError(
                f"{param} is not supported by this gateway{f' ({hint})' if hint else ''}; leave "
                f"it out or send {default}. Supported: {supported}",
                param=param,
            )


def check_request(body: ChatRequest) -> None:
    """Refuse what the gateway does not implement, naming the parameter.

    Raises:
        GatewayError: a 400 naming the first unsupported parameter or combination.
    """
    _refuse_extra(body.model_extra, UNSUPPORTED, "", SUPPORTED)
    if body.stream_options is not None:
        if not body.streaming:
            raise GatewayError(
                "stream_options is only allowed with stream: true", param="stream_options"
            )
        _refuse_extra(
            body.stream_options.model_extra, {}, "stream_options.", "stream_options.include_usage"
        )
    if body.top_logprobs is not None and not body.logprobs:
        raise GatewayError("top_logprobs requires logprobs: true", param="top_logprobs")
    for i, message in enumerate(body.messages):
        _check_message(message, f"messages[{i}]")
    _check_tools(body)
    _check_response_format(body)


def _check_message(message: WireMessage, where: str) -> None:
    _refuse_extra(
        message.model_extra,
        MESSAGE_UNSUPPORTED,
        f"{where}.",
        "role, content (string or text parts), name, tool_calls (assistant), tool_call_id (tool)",
    )
    for j, part in enumerate(message.content if isinstance(message.content, list) else []):
        if part.type != "text":
            raise GatewayError(
                f"content part type {part.type[:64]!r} is not supported: {MEDIA}",
                param=f"{where}.content[{j}].type",
            )
        if part.text is None or part.model_extra:
            raise GatewayError(
                'a text part is {"type": "text", "text": "..."}', param=f"{where}.content[{j}]"
            )
    if message.tool_calls and message.role != "assistant":
        raise GatewayError("only assistant messages carry tool_calls", param=f"{where}.tool_calls")
    if message.role == "tool" and not message.tool_call_id:
        raise GatewayError(
            "a tool message needs the tool_call_id it answers", param=f"{where}.tool_call_id"
        )
    if message.role != "tool" and message.tool_call_id is not None:
        raise GatewayError("only tool messages carry tool_call_id", param=f"{where}.tool_call_id")


def _check_tools(body: ChatRequest) -> None:
    names: set[str] = set()
    for i, tool in enumerate(body.tools or []):
        if tool.type != "function" or tool.function is None or tool.model_extra:
            raise GatewayError(
                f"tool type {tool.type[:64]!r} is not supported; only "
                '{"type": "function", "function": {"name", "description", "parameters"}} tools are',
                param=f"tools[{i}].type",
            )
        name = tool.function.name
        if name in names or name in ("auto", "required", "none"):
            raise GatewayError(
                f"tool name {name!r} is used twice or is a tool_choice keyword; rename it",
                param=f"tools[{i}].function.name",
            )
        names.add(name)
    choice = body.tool_choice
    if isinstance(choice, dict):
        forced = _get(choice, "function", "name")
        shape = set(choice) == {"type", "function"} and choice["type"] == "function"
        if not shape or not isinstance(forced, str):
            raise GatewayError(
                'tool_choice is "auto", "required", "none" or '
                '{"type": "function", "function": {"name": ...}}',
                param="tool_choice",
            )
        if forced not in names:
            raise GatewayError(
                f"tool_choice names function {forced[:64]!r}, which is not among tools",
                param="tool_choice",
            )
    elif choice is not None and choice not in ("auto", "required", "none"):
        raise GatewayError(
            f"tool_choice {choice[:64]!r} is not supported; use "
            '"auto", "required", "none" or {"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    elif choice == "required" and not names:
        raise GatewayError('tool_choice "required" needs tools', param="tool_choice")


def _check_response_format(body: ChatRequest) -> None:
    fmt = body.response_format
    if fmt is None:
        return
    if fmt.type not in ("text", "json_object", "json_schema") or fmt.model_extra:
        raise GatewayError(
            f"response_format type {fmt.type[:64]!r} is not supported; use text, json_object "
            "or json_schema",
            param="response_format.type",
        )
    if (fmt.type == "json_schema") != (fmt.json_schema is not None):
        raise GatewayError(
            "response_format json_schema needs (and only it takes) a json_schema object with "
            "name and schema",
            param="response_format.json_schema",
        )
    if fmt.type != "text" and body.tools and body.choice != "none":
        raise GatewayError(
            "response_format with tools is not supported on this model: send one of them, or "
            'tool_choice "none" to get the format with the tools only described',
            param="response_format",
        )


class TopLogprob(BaseModel):
    """One alternative token and its log probability."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    """A generated token, its log probability and the most likely alternatives."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    """`choices[].logprobs`."""

    content: list[TokenLogprob] | None = None


class Usage(BaseModel):
    """Token counts."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionOut(BaseModel):
    """The function of a tool call in an answer."""

    name: str
    arguments: str


class ToolCallOut(BaseModel):
    """`message.tool_calls[]`."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionOut


class AssistantMessage(BaseModel):
    """The answer of a non-streamed completion (`content` is null when it is tool calls)."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = Field(default=None, exclude_if=_omit_none)


class Choice(BaseModel):
    """One choice of a non-streamed completion."""

    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    """`chat.completion`."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class FunctionDelta(BaseModel):
    """Part of a streamed tool call's function: the name once, then pieces of arguments."""

    name: str | None = Field(default=None, exclude_if=_omit_none)
    arguments: str | None = Field(default=None, exclude_if=_omit_none)


class ToolCallDelta(BaseModel):
    """`delta.tool_calls[]`: the first delta of a call has its id, type and name."""

    index: int
    id: str | None = Field(default=None, exclude_if=_omit_none)
    type: Literal["function"] | None = Field(default=None, exclude_if=_omit_none)
    function: FunctionDelta


class Delta(BaseModel):
    """What a stream chunk adds (fields it does not add are left out, as OpenAI does)."""

    role: Literal["assistant"] | None = Field(default=None, exclude_if=_omit_none)
    content: str | None = Field(default=None, exclude_if=_omit_none)
    tool_calls: list[ToolCallDelta] | None = Field(default=None, exclude_if=_omit_none)


class ChunkChoice(BaseModel):
    """One choice of a stream chunk; `finish_reason` is null until the choice's last chunk."""

    index: int = 0
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """`chat.completion.chunk`."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = Field(default=None, exclude_if=_omit_none)
    system_fingerprint: str | None = Field(default=None, exclude_if=_omit_none)


class ModelCard(BaseModel):
    """One entry of `GET /v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "raftloop"
    kind: Literal["alias", "base", "adapter"] = "adapter"
    base_model: str | None = None
    serving: bool = False


class ModelList(BaseModel):
    """`GET /v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback`: thumbs (-1/+1) or stars (1..5), with an optional correction."""

    model_config = ConfigDict(extra="forbid")

    interaction_id: str = Field(min_length=1, max_length=64)
    rating: int = Field(ge=-1, le=5)
    scale: Literal["thumbs", "stars"] | None = None
    correction: str | None = Field(default=None, max_length=32_000)
    comment: str | None = Field(default=None, max_length=4_000)


class FeedbackAccepted(BaseModel):
    """Answer to a feedback post."""

    id: str
    interaction_id: str
    status: Literal["accepted"] = "accepted"
