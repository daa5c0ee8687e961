"""The upstream backend: any OpenAI-compatible server (vLLM with LoRA, OpenAI) via `openai`.

The adapter id is passed as the model name (vLLM serves each LoRA under its own name); the bare
base model goes by `upstream_model`. Timeouts and retries are the client's own.

With `registry_dir` (GATEWAY_UPSTREAM_REGISTRY_DIR: the registry as the vLLM server sees it),
`prepare` loads an adapter into vLLM at run time through its runtime LoRA API
(`POST /v1/load_lora_adapter`, needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True on the server), so
every tenant's alias is served by one vLLM fleet as it is by the local engine (issue #17).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import httpx2
import openai
from openai import AsyncOpenAI

from raftloop_core.events import ChatMessage
from raftloop_gateway.domain import (
    Constraint,
    GatewayError,
    GenerationRequest,
    Piece,
    TokenInfo,
    ToolCall,
)
from raftloop_gateway.tools import new_call_id


class UpstreamFailed(GatewayError):
    """The upstream server refused or failed the request."""

    status = 502
    code = "upstream_error"


class UpstreamOverloaded(GatewayError):
    """The upstream server rate-limited the request."""

    status = 429
    code = "upstream_rate_limited"


def _split(total: int | None, weights: Sequence[int]) -> list[int | None]:
    """Share a request's completion tokens among its choices (servers report only the sum)."""
    if total is None or len(weights) <= 1:
        return [total] * len(weights)
    if not any(weights):
        weights = [1] * len(weights)
    shares = [total * w // sum(weights) for w in weights]
    shares[max(range(len(weights)), key=lambda i: weights[i])] += total - sum(shares)
    return list(shares)


def _calls(raw: list[dict[str, Any]] | None) -> list[ToolCall]:
    return [
        ToolCall(c.get("id") or new_call_id(), c["function"]["name"], c["function"]["arguments"])
        for c in raw or []
    ]


def _pieces_of(done: dict[str, Any]) -> list[Piece]:
    """A whole completion as one final piece per choice."""
    usage = done.get("usage") or {}
    choices = sorted(done["choices"], key=lambda c: c.get("index", 0))
    pieces = []
    for choice in choices:
        content = (choice.get("logprobs") or {}).get("content") or []
        tokens = [
            TokenInfo(
                t["token"],
                t["logprob"],
                [(a["token"], a["logprob"]) for a in t.get("top_logprobs", [])],
            )
            for t in content
        ]
        message = choice["message"]
        pieces.append(
            Piece(
                text=message.get("content") or "",
                tokens=tokens,
                finish_reason=choice.get("finish_reason") or "stop",
                prompt_tokens=usage.get("prompt_tokens"),
                index=choice.get("index", 0),
                tool_calls=_calls(message.get("tool_calls")),
            )
        )
    weights = [len(p.text) + sum(len(c.arguments) for c in p.tool_calls) for p in pieces]
    for piece, share in zip(pieces, _split(usage.get("completion_tokens"), weights), strict=True):
        piece.completion_tokens = share
    return pieces


def _tokens(logprobs: Any) -> list[TokenInfo]:
    if logprobs is None or not logprobs.content:
        return []
    return [
        TokenInfo(t.token, t.logprob, [(a.token, a.logprob) for a in t.top_logprobs or []])
        for t in logprobs.content
    ]


class UpstreamBackend:
    """Forwards generation to an OpenAI-compatible endpoint."""

    def __init__(
        self, client: AsyncOpenAI, *, base_model: str, registry_dir: PurePosixPath | None = None
    ) -> None:
        self.client = client
        self.base_model = base_model
        self.registry_dir = registry_dir
        self.loaded: set[str] = set()
        self._loading: dict[str, asyncio.Lock] = {}

    @property
    def ready(self) -> bool:
        """The upstream's health is its own; requests surface its errors."""
        return True

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """A cheap estimate (about four characters per token) for the size bound."""
        return sum(len(m.content) + 4 for m in messages) // 4

    async def prepare(self, adapter_id: str) -> None:
        """Load the adapter into vLLM by name, once; without `registry_dir` the server does.

        Raises:
            UpstreamFailed: the server refused to load it or is unreachable.
        """
        if self.registry_dir is None or adapter_id in self.loaded:
            return
        async with self._loading.setdefault(adapter_id, asyncio.Lock()):
            if adapter_id in self.loaded:
                return
            body = {
                "lora_name": adapter_id,
                "lora_path": str(self.registry_dir / "adapters" / adapter_id),
            }
            try:
                await self.client.post("/load_lora_adapter", body=body, cast_to=httpx2.Response)
            except openai.BadRequestError as exc:
                # vLLM answers 400 for a name it already has (loaded before this gateway
                # started, or by another replica): that is the state we want.
                if "already been loaded" not in str(exc.message):
                    raise UpstreamFailed(_load_failed(adapter_id, exc)) from exc
            except openai.APIStatusError as exc:
                raise UpstreamFailed(_load_failed(adapter_id, exc)) from exc
            except openai.APIConnectionError as exc:
                raise UpstreamFailed(f"the upstream model server is unreachable: {exc!r}") from exc
            self.loaded.add(adapter_id)

    async def check_constraint(self, constraint: Constraint) -> None:
        """The upstream server enforces formats and tool schemas itself (vLLM's guided decoding)."""

    def _arguments(self, request: GenerationRequest) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": request.adapter_id or self.base_model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        native = request.native
        if native is not None:  # the server applies its own tool template, parser and grammar
            args["messages"] = [dict(m) for m in native.messages]
            fields = {
                "tools": [dict(t) for t in native.tools] or None,
                "tool_choice": native.tool_choice,
                "parallel_tool_calls": native.parallel_tool_calls,
                "response_format": native.response_format,
            }
            args |= {k: v for k, v in fields.items() if v is not None}
        if request.n > 1:
            args["n"] = request.n
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
                for piece in _pieces_of(json.loads(raw.content)):
                    yield piece
                return
            stream = await self.client.chat.completions.create(
                **args, stream=True, stream_options={"include_usage": True}
            )
            async with stream:
                async for piece in _pieces(stream, request.n):
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


def _load_failed(adapter_id: str, exc: openai.APIStatusError) -> str:
    return (
        f"the upstream model server refused to load adapter {adapter_id[:12]} "
        f"({exc.status_code}: {exc.message}); check that it runs with "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and --enable-lora, and that "
        "GATEWAY_UPSTREAM_REGISTRY_DIR is the registry's path on that server"
    )


@dataclass
class _Choice:
    """A streamed choice: its finish reason, tool calls assembled from deltas, chunk count."""

    finish: str | None = None
    calls: dict[int, list[str]] = field(default_factory=dict)  # index -> [id, name, arguments]
    chunks: int = 0

    def add_calls(self, deltas: Any) -> None:
        for d in deltas or []:
            call = self.calls.setdefault(d.index, ["", "", ""])
            call[0] = d.id or call[0]
            if d.function is not None:
                call[1] = d.function.name or call[1]
                call[2] += d.function.arguments or ""

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(i or new_call_id(), name, args)
            for i, name, args in (self.calls[k] for k in sorted(self.calls))
        ]


async def _pieces(stream: Any, n: int) -> AsyncIterator[Piece]:
    """Text as it streams; each choice's tool calls, finish reason and counts at the end."""
    choices = [_Choice() for _ in range(n)]
    usage: Any = None
    async for chunk in stream:
        for choice in chunk.choices or []:
            state = choices[choice.index]
            state.finish = choice.finish_reason or state.finish
            delta = choice.delta
            text = (delta.content or "") if delta else ""
            state.add_calls(delta.tool_calls if delta else None)
            state.chunks += 1
            if text or choice.logprobs:
                yield Piece(text=text, tokens=_tokens(choice.logprobs), index=choice.index)
        usage = chunk.usage or usage
    total = usage.completion_tokens if usage is not None else None
    shares = _split(total, [c.chunks for c in choices])
    for index, (state, share) in enumerate(zip(choices, shares, strict=True)):
        yield Piece(
            finish_reason=state.finish or "stop",
            prompt_tokens=usage.prompt_tokens if usage is not None else None,
            completion_tokens=share,
            index=index,
            tool_calls=state.tool_calls(),
        )
