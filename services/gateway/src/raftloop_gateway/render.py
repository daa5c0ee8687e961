"""Rendering answers in the OpenAI wire format: completions, stream chunks, logprobs."""

from __future__ import annotations

import time
from collections.abc import Sequence

from raftloop_gateway.chat import Turn
from raftloop_gateway.domain import TokenInfo
from raftloop_gateway.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    TokenLogprob,
    TopLogprob,
    Usage,
)


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
    """Token counts of a turn."""
    return Usage(
        prompt_tokens=turn.prompt_tokens,
        completion_tokens=turn.completion_tokens,
        total_tokens=turn.prompt_tokens + turn.completion_tokens,
    )


def completion(turn: Turn, footer: str) -> ChatCompletion:
    """The non-streamed response."""
    return ChatCompletion(
        id=str(turn.interaction_id),
        created=int(time.time()),
        model=turn.body.model,
        choices=[
            Choice(
                message=AssistantMessage(content=turn.answer + footer),
                finish_reason=turn.finish_reason or "stop",
                logprobs=logprobs(turn.tokens) if turn.body.logprobs else None,
            )
        ],
        usage=usage(turn),
        system_fingerprint=turn.route.adapter_id or "base",
    )


def chunk(
    turn: Turn,
    *,
    content: str | None = None,
    role: bool = False,
    finish: str | None = None,
    tokens: Sequence[TokenInfo] = (),
) -> bytes:
    """One SSE `data:` line of a stream chunk."""
    body = ChatCompletionChunk(
        id=str(turn.interaction_id),
        created=int(time.time()),
        model=turn.body.model,
        choices=[
            ChunkChoice(
                delta=Delta(role="assistant" if role else None, content=content),
                finish_reason=finish,
                logprobs=logprobs(tokens) if turn.body.logprobs and tokens else None,
            )
        ],
        system_fingerprint=turn.route.adapter_id or "base",
    )
    return sse(body.model_dump_json(exclude_none=True))


def usage_chunk(turn: Turn) -> bytes:
    """The final usage-only chunk (`stream_options.include_usage`)."""
    body = ChatCompletionChunk(
        id=str(turn.interaction_id),
        created=int(time.time()),
        model=turn.body.model,
        choices=[],
        usage=usage(turn),
    )
    return sse(body.model_dump_json(exclude_none=True))


def sse(data: str) -> bytes:
    """A server-sent event."""
    return f"data: {data}\n\n".encode()


DONE = sse("[DONE]")
