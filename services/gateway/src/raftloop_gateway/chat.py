"""One chat completion from request to captured event: limits, routing, retrieval, generation."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID, uuid4

from raftloop_core.api import Caller
from raftloop_core.events import (
    ChatCompleted,
    ChatMessage,
    GenerationParams,
    RetrievedChunk,
    TokenUsage,
)
from raftloop_core.logs import bind
from raftloop_core.topics import Topic
from raftloop_gateway.domain import (
    Backend,
    EventSink,
    GatewayError,
    GenerationRequest,
    NotReady,
    Piece,
    Retriever,
    Route,
    TokenInfo,
    TooLong,
    choose_route,
    conversation_id,
    last_user_turn,
    with_sources,
)
from raftloop_gateway.hotswap import ServingState
from raftloop_gateway.limits import Admission, RateLimiter
from raftloop_gateway.schemas import ChatRequest
from raftloop_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

CONVERSATION_HEADER = "x-raftloop-conversation-id"
INTERACTION_HEADER = "x-raftloop-interaction-id"
ADAPTER_HEADER = "x-raftloop-adapter"


@dataclass
class Turn:
    """Everything known about one interaction while it is being answered."""

    interaction_id: UUID
    caller: Caller
    body: ChatRequest
    messages: list[ChatMessage]
    conversation_id: str
    route: Route
    retrieved: list[RetrievedChunk]
    generation: GenerationRequest
    started: float = field(default_factory=time.perf_counter)
    text: list[str] = field(default_factory=list)
    tokens: list[TokenInfo] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, piece: Piece) -> None:
        """Take in a piece of the answer."""
        self.text.append(piece.text)
        self.tokens.extend(piece.tokens)
        self.finish_reason = piece.finish_reason or self.finish_reason
        self.prompt_tokens = piece.prompt_tokens or self.prompt_tokens
        self.completion_tokens = piece.completion_tokens or self.completion_tokens

    @property
    def answer(self) -> str:
        """The answer so far."""
        return "".join(self.text)

    @property
    def headers(self) -> dict[str, str]:
        """Response headers naming the interaction, conversation and adapter."""
        return {
            INTERACTION_HEADER: str(self.interaction_id),
            CONVERSATION_HEADER: self.conversation_id,
            ADAPTER_HEADER: self.route.adapter_id or "base",
        }


def to_messages(body: ChatRequest) -> list[ChatMessage]:
    """Wire messages as event messages (`developer` is a system turn)."""
    return [
        ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text())
        for m in body.messages
    ]


class ChatService:
    """Prepares, limits and captures chat completions for the HTTP routes."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        backend: Backend,
        state: ServingState,
        sink: EventSink | None,
        retriever: Retriever | None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.state = state
        self.sink = sink
        self.retriever = retriever
        self.limiter = RateLimiter()
        self.admission = Admission(settings.max_concurrency, settings.max_queue)

    def max_tokens(self, body: ChatRequest) -> int:
        """The completion bound, checked against the configured limit."""
        asked = body.max_completion_tokens or body.max_tokens
        if asked is not None and asked > self.settings.max_tokens_limit:
            raise GatewayError(
                f"max_tokens {asked} exceeds this gateway's limit of "
                f"{self.settings.max_tokens_limit} (GATEWAY_MAX_TOKENS_LIMIT)",
                param="max_tokens",
            )
        return asked or min(self.settings.default_max_tokens, self.settings.max_tokens_limit)

    async def route(self, body: ChatRequest, conversation: str) -> Route:
        """Choose the adapter and make sure it is loaded."""
        route = choose_route(
            body.model,
            served_model=self.settings.served_model,
            base_names=[self.backend.base_model],
            serving=self.state.serving,
            canary=self.state.canary.adapter_id,
            canary_share=self.state.canary.share,
            conversation_id=conversation,
            known=[body.model] if await self._is_adapter(body.model) else [],
        )
        if route.adapter_id is not None:
            await self.state.verify(route.adapter_id)
        return route

    async def _is_adapter(self, model: str) -> bool:
        if model in (self.settings.served_model, "serving", self.backend.base_model):
            return False  # the common case costs no file-system call
        return await self.state.known(model)

    async def retrieve(
        self, caller: Caller, body: ChatRequest, messages: Sequence[ChatMessage]
    ) -> list[RetrievedChunk]:
        """Context from rag for the last user turn (not for internal callers such as the judge)."""
        metadata = body.metadata or {}
        if self.retriever is None or caller.role == "internal" or metadata.get("rag") == "off":
            return []
        query = last_user_turn(messages)
        if not query:
            return []
        return await self.retriever.retrieve(query, k=self.settings.rag_k, tenant=caller.tenant)

    async def prepare(self, body: ChatRequest, caller: Caller, conversation: str | None) -> Turn:
        """Check limits, route, retrieve and build the generation request.

        Raises:
            GatewayError: any refusal, with the status it maps to.
        """
        self.limiter.admit(
            caller.key_id,
            requests_per_minute=caller.requests_per_minute,
            tokens_per_minute=caller.tokens_per_minute,
        )
        if not self.backend.ready:
            failure = getattr(self.backend, "load_error", None)
            raise NotReady(failure or "the model is still loading; retry in a few seconds")
        if self.sink is not None and not self.sink.accepting:
            raise NotReady("the capture spool is full while the broker is down; retry later")
        max_tokens = self.max_tokens(body)
        messages = to_messages(body)
        explicit = (body.metadata or {}).get("conversation_id") or conversation
        conv = conversation_id(
            explicit, tenant=caller.tenant, key_id=caller.key_id, messages=messages
        )
        route = await self.route(body, conv)
        interaction_id = uuid4()
        with bind(interaction_id=interaction_id):  # rag logs its retrieval under this id
            retrieved = await self.retrieve(caller, body, messages)
        prompt = with_sources(messages, retrieved, self.settings.rag_prompt)
        if self.backend.count_tokens(prompt) > self.settings.max_prompt_tokens:
            raise TooLong(
                f"the prompt is longer than {self.settings.max_prompt_tokens} tokens "
                "(GATEWAY_MAX_PROMPT_TOKENS); shorten the conversation",
                param="messages",
            )
        generation = GenerationRequest(
            messages=prompt,
            max_tokens=max_tokens,
            adapter_id=route.adapter_id,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            stop=body.stops,
            seed=body.seed,
            logprobs=body.logprobs,
            top_logprobs=body.top_logprobs or 0 if body.logprobs else 0,
            stream=body.stream,
        )
        return Turn(interaction_id, caller, body, messages, conv, route, retrieved, generation)

    def finish(self, turn: Turn, *, aborted: bool = False) -> None:
        """Charge the tokens and capture the interaction (never for internal callers)."""
        self.limiter.spend_tokens(
            turn.caller.key_id,
            turn.prompt_tokens + turn.completion_tokens,
            tokens_per_minute=turn.caller.tokens_per_minute,
        )
        if self.sink is None or turn.caller.role == "internal":
            return
        body = turn.body
        latency_ms = (time.perf_counter() - turn.started) * 1000
        event = ChatCompleted(
            tenant=turn.caller.tenant,
            interaction_id=turn.interaction_id,
            conversation_id=turn.conversation_id,
            key_id=turn.caller.key_id,
            model=body.model,
            base_model=self.backend.base_model,
            adapter_id=turn.route.adapter_id,
            messages=turn.messages,
            answer=turn.answer,
            finish_reason="abort" if aborted else turn.finish_reason,
            retrieved=turn.retrieved,
            params=GenerationParams(
                max_tokens=turn.generation.max_tokens,
                temperature=body.temperature,
                top_p=body.top_p,
                seed=body.seed,
                stop=body.stops,
            ),
            usage=TokenUsage(
                prompt_tokens=turn.prompt_tokens, completion_tokens=turn.completion_tokens
            ),
            latency_ms=latency_ms,
            aborted=aborted,
            user=body.user,
            metadata=body.metadata or {},
        )
        self.sink.submit(Topic.CHAT_COMPLETED, event)
        log.info(
            "chat completed",
            extra={
                "interaction_id": str(event.interaction_id),
                "tenant": event.tenant,
                "model": event.model,
                "adapter_id": event.adapter_id,
                "finish_reason": event.finish_reason,
                "completion_tokens": turn.completion_tokens,
                "latency_ms": round(latency_ms, 1),
                "sources": len(turn.retrieved),
            },
        )
