"""The upstream backend: any OpenAI-compatible server (vLLM with LoRA, OpenAI) via `openai`.

The adapter id is passed as the model name (vLLM serves each LoRA under its own name); the bare
base model goes by `upstream_model`. Timeouts and retries are the client's own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

import httpx2
import openai
from openai import AsyncOpenAI

from raftloop_core.events import ChatMessage
from raftloop_gateway.domain import GatewayError, GenerationRequest, Piece, TokenInfo


class UpstreamFailed(GatewayError):
    """The upstream server refused or failed the request."""

    status = 502
    code = "upstream_error"


class UpstreamOverloaded(GatewayError):
    """The upstream server rate-limited the request."""

    status = 429
    code = "upstream_rate_limited"


def _piece(done: dict[str, Any]) -> Piece:
    choice = done["choices"][0]
    usage = done.get("usage") or {}
    content = (choice.get("logprobs") or {}).get("content") or []
    tokens = [
        TokenInfo(
            t["token"],
            t["logprob"],
            [(a["token"], a["logprob"]) for a in t.get("top_logprobs", [])],
        )
        for t in content
    ]
    return Piece(
        text=choice["message"].get("content") or "",
        tokens=tokens,
        finish_reason=choice.get("finish_reason") or "stop",
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )


def _tokens(logprobs: Any) -> list[TokenInfo]:
    if logprobs is None or not logprobs.content:
        return []
    return [
        TokenInfo(t.token, t.logprob, [(a.token, a.logprob) for a in t.top_logprobs or []])
        for t in logprobs.content
    ]


class UpstreamBackend:
    """Forwards generation to an OpenAI-compatible endpoint."""

    def __init__(self, client: AsyncOpenAI, *, base_model: str) -> None:
        self.client = client
        self.base_model = base_model

    @property
    def ready(self) -> bool:
        """The upstream's health is its own; requests surface its errors."""
        return True

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """A cheap estimate (about four characters per token) for the size bound."""
        return sum(len(m.content) + 4 for m in messages) // 4

    async def prepare(self, adapter_id: str) -> None:
        """The upstream server loads its adapters itself."""

    def _arguments(self, request: GenerationRequest) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": request.adapter_id or self.base_model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.stop:
            args["stop"] = request.stop
        if request.seed is not None:
            args["seed"] = request.seed
        if request.logprobs:
            args["logprobs"] = True
            args["top_logprobs"] = request.top_logprobs
        return args

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Piece, None]:
        """Stream through when the client streams; otherwise one piece."""
        args = self._arguments(request)
        try:
            if not request.stream:
                # The client's own request path (auth, timeouts, retries), without building
                # typed response models that would only be taken apart again.
                raw = await self.client.post(
                    "/chat/completions", body=args, cast_to=httpx2.Response
                )
                yield _piece(json.loads(raw.content))
                return
            stream = await self.client.chat.completions.create(
                **args, stream=True, stream_options={"include_usage": True}
            )
            async with stream:
                async for piece in _pieces(stream):
                    yield piece
        except openai.RateLimitError as exc:
            raise UpstreamOverloaded(f"the upstream model server is rate limiting: {exc}") from exc
        except openai.APIStatusError as exc:
            raise UpstreamFailed(
                f"the upstream model server answered {exc.status_code}: {exc.message}"
            ) from exc
        except (openai.APIConnectionError, KeyError, IndexError, ValueError) as exc:
            raise UpstreamFailed(
                f"the upstream model server failed or is unreachable: {exc!r}"
            ) from exc


async def _pieces(stream: Any) -> AsyncIterator[Piece]:
    finish: str | None = None
    async for chunk in stream:
        if chunk.choices:
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            text = choice.delta.content or "" if choice.delta else ""
            if text or choice.logprobs:
                yield Piece(text=text, tokens=_tokens(choice.logprobs))
        if chunk.usage is not None:
            yield Piece(
                finish_reason=finish or "stop",
                prompt_tokens=chunk.usage.prompt_tokens,
                completion_tokens=chunk.usage.completion_tokens,
            )
            return
    yield Piece(finish_reason=finish or "stop")
