"""Rendering: the client's request as the model's conversation, answers in OpenAI's format."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from raftloop_core.events import ChatMessage, RetrievedChunk
from raftloop_gateway.domain import (
    Constraint,
    NativeTools,
    PromptLayout,
    TokenInfo,
    ToolSpec,
    with_sources,
)
from raftloop_gateway.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FunctionDelta,
    FunctionOut,
    TokenLogprob,
    ToolCallDelta,
    ToolCallOut,
    TopLogprob,
    Usage,
)
from raftloop_gateway.tools import (
    ArgumentsDelta,
    CallStart,
    TextDelta,
    ToolEvent,
    call_text,
    format_instruction,
    tool_response_text,
    tools_instruction,
)

if TYPE_CHECKING:  # chat imports this module
    from raftloop_gateway.chat import Answer, Turn

# ---------------------------------------------------------------- the request, for the model


def to_messages(body: ChatRequest) -> list[ChatMessage]:
    """Wire messages as event messages, one for one.

    `developer` is a system turn; a tool result is a user turn in `<tool_response>`, and an
    assistant's tool calls are written as the model writes them.
    """
    out: list[ChatMessage] = []
    for m in body.messages:
        if m.role == "tool":
            out.append(ChatMessage(role="user", content=tool_response_text(m.text())))
        elif m.role == "assistant" and m.tool_calls:
            calls = [call_text(c.function.name, c.function.arguments) for c in m.tool_calls]
            said = m.text()
            out.append(
                ChatMessage(role="assistant", content="\n".join([said, *calls] if said else calls))
            )
        else:
            out.append(
                ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text())
            )
    return out


def _specs(body: ChatRequest) -> tuple[ToolSpec, ...]:
    return tuple(
        ToolSpec(f.name, f.description or "", f.parameters or {}) for f in body.function_tools
    )


def tools_text(body: ChatRequest) -> str:
    """What the system turn says about the offered tools ("" without tools)."""
    if not body.tools:
        return ""
    parallel = body.parallel_tool_calls is not False
    return tools_instruction(_specs(body), body.choice, parallel=parallel)


def format_text(body: ChatRequest) -> str:
    """What the system turn says about the asked output format ("" for text)."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return ""
    js = fmt.json_schema
    if js is None:
        return format_instruction(None)
    return format_instruction(
        js.schema_ or {"type": "object"}, name=js.name, description=js.description
    )


def conversation(body: ChatRequest) -> list[ChatMessage]:
    """The conversation as the model reads it (and as it is captured), before any sources."""
    said = "\n\n".join(t for t in (tools_text(body), format_text(body)) if t)
    return with_system(to_messages(body), said)


def with_system(messages: list[ChatMessage], text: str) -> list[ChatMessage]:
    """`text` added to the system turn (one is opened when there is none)."""
    if not text:
        return messages
    if messages and messages[0].role == "system":
        head = ChatMessage(role="system", content=f"{messages[0].content}\n\n{text}")
        return [head, *messages[1:]]
    return [ChatMessage(role="system", content=text), *messages]


def constraint_for(body: ChatRequest) -> Constraint | None:
    """What the decoder must keep the output to, from response_format or tools and tool_choice."""
    if body.tools and body.choice != "none":
        return Constraint(
            kind="tools",
            tools=_specs(body),
            tool_choice=body.choice,
            parallel=body.parallel_tool_calls is not False,
        )
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    schema = fmt.json_schema.schema_ if fmt.json_schema is not None else None
    return Constraint(kind="json", schema=schema)


def native(
    body: ChatRequest, retrieved: Sequence[RetrievedChunk], layout: PromptLayout
) -> NativeTools | None:
    """The request in OpenAI's shape, for a backend that takes tools and formats as they are.

    Only when the client sent tools or a JSON format. The server describes the tools itself;
    the format instruction and the retrieved sources are added as for the local model.
    """
    fmt = body.response_format
    if not body.tools and (fmt is None or fmt.type == "text"):
        return None
    # One for one with the wire messages, but for a system turn the sources may open in front.
    plain = with_sources(with_system(to_messages(body), format_text(body)), retrieved, layout)
    offset = len(plain) - len(body.messages)
    messages: list[dict[str, object]] = []
    if offset:
        messages.append({"role": "system", "content": plain[0].content})
    for m, p in zip(body.messages, plain[offset:], strict=True):
        if m.role == "tool":
            messages.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.text()})
        elif m.role == "assistant" and m.tool_calls:
            calls = [c.model_dump() for c in m.tool_calls]
            messages.append({"role": "assistant", "content": m.text() or None, "tool_calls": calls})
        else:
            messages.append({"role": p.role, "content": p.content})
    return NativeTools(
        messages=tuple(messages),
        tools=tuple(t.model_dump(exclude_none=True) for t in body.tools or []),
        tool_choice=body.tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=None if fmt is None else fmt.model_dump(by_alias=True, exclude_none=True),
    )


# ---------------------------------------------------------------- answers, for the client


def _bytes(token: str) -> list[int]:
    return list(token.encode("utf-8", errors="replace"))


def logprobs(tokens: Sequence[TokenInfo]) -> ChoiceLogprobs:
    """OpenAI `logprobs.content` from generated tokens."""
    return ChoiceLogprobs(
        content=[
            TokenLogprob(
                token=t.token,
                logprob=t.logprob,
                bytes=_bytes(t.token),
                top_logprobs=[TopLogprob(token=a, logprob=p, bytes=_bytes(a)) for a, p in t.top],
            )
            for t in tokens
        ]
    )


def usage(turn: Turn) -> Usage:
    """Token counts of a request: one prompt, the completion tokens of every choice."""
    return Usage(
        prompt_tokens=turn.prompt_tokens,
        completion_tokens=turn.completion_tokens,
        total_tokens=turn.prompt_tokens + turn.completion_tokens,
    )


def message(turn: Turn, answer: Answer, footer: str) -> AssistantMessage:
    """One answer as `choices[].message`: its text (and the sources line), or its tool calls."""
    calls = answer.calls
    if calls:
        out = [
            ToolCallOut(id=c.id, function=FunctionOut(name=c.name, arguments=c.arguments))
            for c in calls
        ]
        return AssistantMessage(content=answer.content, tool_calls=out)
    return AssistantMessage(content=(answer.content or "") + (footer if turn.plain else ""))


def completion(turn: Turn, footer: str) -> ChatCompletion:
    """The non-streamed response."""
    return ChatCompletion(
        id=turn.completion_id,
        created=turn.created,
        model=turn.body.model,
        choices=[
            Choice(
                index=answer.index,
                message=message(turn, answer, footer),
                finish_reason=answer.finish,
                logprobs=logprobs(answer.tokens) if turn.body.logprobs else None,
            )
            for answer in turn.answers
        ],
        usage=usage(turn),
        system_fingerprint=turn.route.adapter_id or "base",
    )


def chunk(
    turn: Turn,
    index: int,
    delta: Delta,
    *,
    finish: str | None = None,
    tokens: Sequence[TokenInfo] = (),
) -> bytes:
    """One SSE `data:` line of a stream chunk for choice `index`."""
    body = ChatCompletionChunk(
        id=turn.completion_id,
        created=turn.created,
        model=turn.body.model,
        choices=[
            ChunkChoice(
                index=index,
                delta=delta,
                finish_reason=finish,
                logprobs=logprobs(tokens) if turn.body.logprobs and tokens else None,
            )
        ],
        system_fingerprint=turn.route.adapter_id or "base",
    )
    return sse(body.model_dump_json())


def deltas(events: Sequence[ToolEvent]) -> list[Delta]:
    """Stream deltas for what an answer's reader let through (adjacent text joined)."""
    out: list[Delta] = []
    for event in events:
        if isinstance(event, TextDelta):
            if out and out[-1].content is not None:
                out[-1].content += event.text
            else:
                out.append(Delta(content=event.text))
        elif isinstance(event, CallStart):
            function = FunctionDelta(name=event.name, arguments="")
            out.append(
                Delta(
                    tool_calls=[
                        ToolCallDelta(
                            index=event.index, id=event.id, type="function", function=function
                        )
                    ]
                )
            )
        elif isinstance(event, ArgumentsDelta):
            function = FunctionDelta(arguments=event.text)
            out.append(Delta(tool_calls=[ToolCallDelta(index=event.index, function=function)]))
    return out


def usage_chunk(turn: Turn) -> bytes:
    """The final usage-only chunk (`stream_options.include_usage`)."""
    body = ChatCompletionChunk(
        id=turn.completion_id,
        created=turn.created,
        model=turn.body.model,
        choices=[],
        usage=usage(turn),
        system_fingerprint=turn.route.adapter_id or "base",
    )
    return sse(body.model_dump_json())


def sse(data: str) -> bytes:
    """A server-sent event."""
    return f"data: {data}\n\n".encode()


DONE = sse("[DONE]")
