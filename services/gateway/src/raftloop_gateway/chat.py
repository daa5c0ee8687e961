"""One chat completion from request to captured events: limits, routing, retrieval, generation."""

from __future__ import annotations

import logging
import time
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
from raftloop_gateway import render
from raftloop_gateway.domain import (
    Backend,
    EventSink,
    GatewayError,
    GenerationRequest,
    Lane,
    NotReady,
    Piece,
    PromptLayout,
    Retriever,
    Route,
    TokenInfo,
    ToolCall,
    TooLong,
    choose_route,
    conversation_id,
    with_sources,
)
from raftloop_gateway.hotswap import ServingState
from raftloop_gateway.limits import Admission, RateLimiter
from raftloop_gateway.schemas import ChatRequest, check_request
from raftloop_gateway.settings import GatewaySettings
from raftloop_gateway.tools import (
    ArgumentsDelta,
    CallStart,
    TextDelta,
    ToolCallReader,
    ToolEvent,
    call_text,
)

log = logging.getLogger(__name__)

CONVERSATION_HEADER = "x-raftloop-conversation-id"
INTERACTION_HEADER = "x-raftloop-interaction-id"
ADAPTER_HEADER = "x-raftloop-adapter"
REQUEST_ID_HEADER = "x-request-id"


@dataclass
class Answer:
    """One of the request's `n` choices as it is generated: text, tool calls, counts."""

    index: int
    interaction_id: UUID
    reader: ToolCallReader | None = None
    max_calls: int | None = None
    text: list[str] = field(default_factory=list)
    tokens: list[TokenInfo] = field(default_factory=list)
    backend_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, piece: Piece) -> list[ToolEvent]:
        """Take in a piece of this answer; return what the client can be sent now."""
        self.text.append(piece.text)
        self.tokens.extend(piece.tokens)
        if self.reader is not None:
            events = self.reader.feed(piece.text)
        else:
            events = [TextDelta(piece.text)] if piece.text else []
        for call in piece.tool_calls:  # parsed by the backend (an upstream server)
            if self.max_calls is not None and len(self.calls) >= self.max_calls:
                break
            index = len(self.calls)
            self.backend_calls.append(call)
            events += [CallStart(index, call.id, call.name), ArgumentsDelta(index, call.arguments)]
        if piece.finish_reason:
            self.finish_reason = piece.finish_reason
            if self.reader is not None:
                events += self.reader.close()
        self.prompt_tokens = piece.prompt_tokens or self.prompt_tokens
        self.completion_tokens = piece.completion_tokens or self.completion_tokens
        return events

    @property
    def calls(self) -> list[ToolCall]:
        """The tool calls of this answer."""
        read = self.reader.calls if self.reader is not None else []
        return read + self.backend_calls

    @property
    def content(self) -> str | None:
        """`message.content`: null when the answer is tool calls only."""
        text = self.reader.content if self.reader is not None else "".join(self.text)
        return None if self.backend_calls and not (text or "").strip() else text

    @property
    def answer(self) -> str:
        """What the model said, as captured: tool calls in the layout they are prompted in."""
        said = "".join(self.text)
        calls = [call_text(c.name, c.arguments) for c in self.backend_calls]
        return "\n".join([said, *calls] if said else calls)

    @property
    def finish(self) -> str:
        """The finish reason on the wire: `tool_calls` when the answer ended in tool calls."""
        reason = self.finish_reason or "stop"
        return "tool_calls" if self.calls and reason == "stop" else reason


@dataclass
class Turn:
    """Everything known about one request while it is being answered."""

    interaction_id: UUID
    caller: Caller
    body: ChatRequest
    messages: list[ChatMessage]
    conversation_id: str
    route: Route
    retrieved: list[RetrievedChunk]
    generation: GenerationRequest
    answers: list[Answer]
    request_id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.perf_counter)

    def add(self, piece: Piece) -> list[ToolEvent]:
        """Take in a piece of one of the answers."""
        return self.answers[piece.index].add(piece)

    @property
    def completion_id(self) -> str:
        """The OpenAI-style id of the completion (from the first answer's interaction id)."""
        return f"chatcmpl-{self.interaction_id.hex}"

    @property
    def lane(self) -> Lane:
        """The admission lane: the platform's own callers queue apart from chat clients."""
        return "internal" if self.caller.role == "internal" else "chat"

    @property
    def plain(self) -> bool:
        """Free text was asked for (no JSON, no tool calls): sources may be appended."""
        return self.generation.constraint is None

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens (the n answers share one prompt)."""
        return max((a.prompt_tokens for a in self.answers), default=0)

    @property
    def completion_tokens(self) -> int:
        """Tokens generated over every answer."""
        return sum(a.completion_tokens for a in self.answers)

    @property
    def headers(self) -> dict[str, str]:
        """Response headers naming the request, interaction, conversation and adapter."""
        return {
            INTERACTION_HEADER: str(self.interaction_id),
            CONVERSATION_HEADER: self.conversation_id,
            ADAPTER_HEADER: self.route.adapter_id or "base",
            REQUEST_ID_HEADER: self.request_id,
        }


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
        self.admission = Admission(
            settings.max_concurrency,
            settings.max_queue,
            weights={"chat": settings.chat_weight, "internal": settings.internal_weight},
            queues={"chat": settings.max_queue, "internal": settings.internal_max_queue},
        )

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

    async def route(self, body: ChatRequest, conversation: str, tenant: str) -> Route:
        """Choose the adapter from the tenant's alias and make sure it is loaded."""
        serving = await self.state.of(tenant)
        route = choose_route(
            body.model,
            served_model=self.settings.served_model,
            base_names=[self.backend.base_model],
            serving=serving.serving,
            canary=serving.canary.adapter_id,
            canary_share=serving.canary.share,
            conversation_id=conversation,
            known=[body.model] if await self._is_adapter(body.model, tenant) else [],
        )
        if route.adapter_id is not None:
            await self.state.verify(route.adapter_id)
        return route

    async def _is_adapter(self, model: str, tenant: str) -> bool:
        if model in (self.settings.served_model, "serving", self.backend.base_model):
            return False  # the common case costs no file-system call
        # Another tenant's adapter is unknown here, so it answers 404 like a made-up name.
        return await self.state.known(model, tenant)

    async def retrieve(self, caller: Caller, body: ChatRequest) -> list[RetrievedChunk]:
        """Context from rag for the last user turn (not for internal callers such as the judge)."""
        metadata = body.metadata or {}
        if self.retriever is None or caller.role == "internal" or metadata.get("rag") == "off":
            return []
        # The client's own question: tool results are user turns too, but not questions.
        query = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
        if not query:
            return []
        return await self.retriever.retrieve(query, k=self.settings.rag_k, tenant=caller.tenant)

    def _layout(self, body: ChatRequest) -> PromptLayout:
        # RAFT rewrites the last user turn, which after a tool call is the tool's result.
        if any(m.role == "tool" for m in body.messages):
            return "sources"
        return self.settings.rag_prompt

    def _answers(self, body: ChatRequest, first: UUID) -> list[Answer]:
        reads = bool(body.tools) and body.choice != "none"
        max_calls = 1 if body.parallel_tool_calls is False else None
        return [
            Answer(
                i,
                first if i == 0 else uuid4(),
                ToolCallReader(auto=body.choice == "auto", max_calls=max_calls) if reads else None,
                max_calls,
            )
            for i in range(body.choices)
        ]

    def admit(self, body: ChatRequest, caller: Caller) -> None:
        """Refuse unsupported requests, spent keys, and work the gateway cannot take now.

        Raises:
            GatewayError: the refusal, with the status it maps to.
        """
        check_request(body)
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

    async def prepare(
        self, body: ChatRequest, caller: Caller, conversation: str | None, request_id: str = ""
    ) -> Turn:
        """Check the request and limits, route, retrieve and build the generation request.

        Raises:
            GatewayError: any refusal, with the status it maps to.
        """
        self.admit(body, caller)
        max_tokens = self.max_tokens(body)
        constraint = render.constraint_for(body)
        if constraint is not None:  # a schema the decoder cannot enforce is a 400 right here
            await self.backend.check_constraint(constraint)
        messages = render.conversation(body)
        explicit = (body.metadata or {}).get("conversation_id") or conversation
        conv = conversation_id(
            explicit, tenant=caller.tenant, key_id=caller.key_id, messages=messages
        )
        route = await self.route(body, conv, caller.tenant)
        interaction_id = uuid4()
        with bind(interaction_id=interaction_id):  # rag logs its retrieval under this id
            retrieved = await self.retrieve(caller, body)
        layout = self._layout(body)
        prompt = with_sources(messages, retrieved, layout)
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
            logprobs=bool(body.logprobs),
            top_logprobs=body.top_logprobs or 0 if body.logprobs else 0,
            stream=body.streaming,
            n=body.choices,
            constraint=constraint,
            parallel_tool_calls=body.parallel_tool_calls is not False,
            native=render.native(body, retrieved, layout),
        )
        answers = self._answers(body, interaction_id)
        return Turn(
            interaction_id,
            caller,
            body,
            messages,
            conv,
            route,
            retrieved,
            generation,
            answers,
            request_id=request_id,
        )

    def finish(self, turn: Turn, *, aborted: bool = False) -> None:
        """Charge the tokens and capture each answer (never for internal callers)."""
        self.limiter.spend_tokens(
            turn.caller.key_id,
            turn.prompt_tokens + turn.completion_tokens,
            tokens_per_minute=turn.caller.tokens_per_minute,
        )
        if self.sink is None or turn.caller.role == "internal":
            return
        for answer in turn.answers:
            # An answer that had ended before the client left is whole; the others are not.
            cut = aborted and answer.finish_reason is None
            self._capture(turn, answer, aborted=cut)

    def _capture(self, turn: Turn, answer: Answer, *, aborted: bool) -> None:
        assert self.sink is not None
        body = turn.body
        latency_ms = (time.perf_counter() - turn.started) * 1000
        event = ChatCompleted(
            tenant=turn.caller.tenant,
            interaction_id=answer.interaction_id,
            conversation_id=turn.conversation_id,
            key_id=turn.caller.key_id,
            model=body.model,
            base_model=self.backend.base_model,
            adapter_id=turn.route.adapter_id,
            messages=turn.messages,
            answer=answer.answer,
            finish_reason="abort" if aborted else answer.finish,
            retrieved=turn.retrieved,
            params=GenerationParams(
                max_tokens=turn.generation.max_tokens,
                temperature=body.temperature,
                top_p=body.top_p,
                seed=body.seed,
                stop=body.stops,
            ),
            usage=TokenUsage(
                prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens
            ),
            latency_ms=latency_ms,
            aborted=aborted,
            user=body.user or body.safety_identifier,
            metadata=body.metadata or {},
        )
        self.sink.submit(Topic.CHAT_COMPLETED, event)
        log.info(
            "chat completed",
            extra={
                "interaction_id": str(event.interaction_id),
                "request_id": turn.request_id,
                "choice": answer.index,
                "tenant": event.tenant,
                "model": event.model,
                "adapter_id": event.adapter_id,
                "finish_reason": event.finish_reason,
                "completion_tokens": answer.completion_tokens,
                "latency_ms": round(latency_ms, 1),
                "sources": len(turn.retrieved),
            },
        )
