"""Pure decisions of the gateway: routing, conversations, prompts with sources, stop strings.

No framework imports and no I/O; the ports that `adapters.py`, `local.py`, `upstream.py` and
`capture.py` implement are declared here.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from raftloop_core import prompting
from raftloop_core.events import ChatMessage, Event, RetrievedChunk
from raftloop_core.topics import Topic

BASE = "__base__"
"""Adapter key of the bare base model."""


class GatewayError(Exception):
    """A request the gateway refuses; `status` is the HTTP status it maps to."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after


class UnknownModel(GatewayError):
    """The requested model is neither the served alias, the base model nor an adapter."""

    status = 404
    code = "model_not_found"


class TooLong(GatewayError):
    """The request or its prompt is larger than the configured bound."""

    status = 413
    code = "context_length_exceeded"


class Overloaded(GatewayError):
    """Every generation slot and queue place is taken."""

    status = 429
    code = "overloaded"


class RateLimited(GatewayError):
    """The key spent its requests or tokens for this minute."""

    status = 429
    code = "rate_limit_exceeded"


class NotReady(GatewayError):
    """The model (or the capture spool) cannot take requests right now."""

    status = 503
    code = "model_not_loaded"


class AdapterUnavailable(GatewayError):
    """An adapter was refused by the registry checks or could not be loaded."""

    status = 409
    code = "adapter_refused"


class UnsupportedSchema(GatewayError):
    """A JSON schema (or tool parameters) uses a feature the constrained decoder cannot enforce."""

    status = 400
    code = "unsupported_schema"


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: its name, description and JSON schema of arguments."""

    name: str
    description: str = ""
    parameters: Mapping[str, object] = field(default_factory=dict)


TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
"""The Hermes convention: each call is `<tool_call>{"name": .., "arguments": {..}}</tool_call>`."""


@dataclass(frozen=True)
class Constraint:
    """What the decoder must keep the output to.

    `json`: the whole output is one JSON value matching `schema` (None: any JSON object).
    `tools`: the output is one or more tool calls (one unless `parallel`) in the Hermes layout,
    each call's arguments matching its function's parameters; with `tool_choice` "auto" free
    text (not starting with `<`) is allowed instead, and a function's name forces that function.
    """

    kind: Literal["json", "tools"]
    schema: Mapping[str, object] | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str = "auto"
    parallel: bool = True
    """Several calls may follow each other (OpenAI's `parallel_tool_calls`); else exactly one."""

    def key(self) -> str:
        """A stable cache key for the compiled grammar."""
        import json

        tools = [(t.name, t.parameters) for t in self.tools]
        parts = [self.kind, self.schema, tools, self.tool_choice, self.parallel]
        return json.dumps(parts, sort_keys=True)


Lane = Literal["chat", "internal"]
"""Admission lane: chat clients, or the platform's own callers (judge, gate)."""


@dataclass(frozen=True)
class GenerationRequest:
    """What a backend is asked to produce (`n` choices, each its own sequence)."""

    messages: list[ChatMessage]
    max_tokens: int
    adapter_id: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    stream: bool = False
    n: int = 1
    constraint: Constraint | None = None
    parallel_tool_calls: bool = True
    """False: at most one tool call per choice (the gateway keeps only the first)."""
    native: NativeTools | None = None
    """Set when the client sent tools or a response format (see `NativeTools`)."""


@dataclass(frozen=True)
class TokenInfo:
    """One generated token with its log probability and the top alternatives."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Piece:
    """A part of an answer as a backend produces it; the last one carries the finish reason."""

    text: str = ""
    tokens: list[TokenInfo] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    index: int = 0
    """Which of the request's `n` choices this piece belongs to."""
    tool_calls: list[ToolCall] = field(default_factory=list)
    """Calls a backend parsed itself (an upstream server's `tool_calls`), complete ones only."""


class Backend(Protocol):
    """Produces answers: the local transformers+peft model or an upstream server."""

    base_model: str

    @property
    def ready(self) -> bool:
        """Whether requests can be served now."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[Piece, None]:
        """Yield the answer in pieces (one piece when not streaming is fine)."""
        ...

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """How many tokens the prompt of these messages takes (an estimate is allowed)."""
        ...

    async def prepare(self, adapter_id: str) -> None:
        """Make an adapter servable ahead of its first request; idempotent."""
        ...

    async def check_constraint(self, constraint: Constraint) -> None:
        """Compile (and cache) a constraint ahead of the request, off the event loop.

        Raises:
            UnsupportedSchema: a schema feature this backend cannot enforce.
        """
        ...


class Retriever(Protocol):
    """Knowledge retrieval (the rag service)."""

    async def retrieve(self, query: str, *, k: int, tenant: str) -> list[RetrievedChunk]:
        """Chunks relevant to `query` for `tenant`, best first."""
        ...


class EventSink(Protocol):
    """Where captured events go; `submit` never waits on the broker."""

    @property
    def accepting(self) -> bool:
        """False when the spool is full, so answering would risk losing an interaction."""
        ...

    def submit(self, topic: Topic, event: Event) -> None:
        """Queue an event for publishing."""
        ...


@dataclass(frozen=True)
class Route:
    """Which adapter serves a request and why."""

    adapter_id: str | None
    reason: str  # "serving", "canary", "pinned" or "base"


def canary_bucket(conversation_id: str) -> float:
    """A stable number in [0, 1) per conversation, so canary routing is sticky."""
    digest = hashlib.sha256(conversation_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_route(
    model: str,
    *,
    served_model: str,
    base_names: Sequence[str],
    serving: str | None,
    canary: str | None,
    canary_share: float,
    conversation_id: str,
    known: Sequence[str],
) -> Route:
    """Decide the adapter: alias (with a sticky canary share), a pinned adapter, or the base.

    Raises:
        UnknownModel: `model` names nothing the gateway serves.
    """
    if model in (served_model, "serving"):
        if canary and canary != serving and canary_bucket(conversation_id) < canary_share:
            return Route(canary, "canary")
        return Route(serving, "serving")
    if model in base_names:
        return Route(None, "base")
    if model in known:
        return Route(model, "pinned")
    raise UnknownModel(
        f"model {model[:80]!r} does not exist; GET /v1/models lists what is served "
        f"(use {served_model!r} for the current serving adapter)",
        param="model",
    )


def conversation_id(
    explicit: str | None, *, tenant: str, key_id: str, messages: Sequence[ChatMessage]
) -> str:
    """The client's conversation id, or one derived from the conversation's opening turns."""
    if explicit:
        return explicit[:128]
    first_user = next((i for i, m in enumerate(messages) if m.role == "user"), len(messages))
    opening = messages[: first_user + 1]  # the system prompt and the first question
    seed = "\x1f".join([tenant, key_id, *(f"{m.role}:{m.content}" for m in opening)])
    return "c-" + hashlib.sha256(seed.encode()).hexdigest()[:24]


def last_user_turn(messages: Sequence[ChatMessage]) -> str:
    """The question to retrieve for."""
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


SOURCES_INSTRUCTION = (
    "Answer the question using the numbered sources below. Cite the sources you use as [1], "
    "[2]. If the sources do not contain the answer, say so."
)


PromptLayout = Literal["raft", "sources"]
"""How retrieved chunks enter the prompt: the RAFT format adapters are trained on, or a list."""


def with_sources(
    messages: Sequence[ChatMessage],
    chunks: Sequence[RetrievedChunk],
    layout: PromptLayout = "sources",
) -> list[ChatMessage]:
    """The messages with the retrieved chunks added, in the given layout."""
    if not chunks:
        return list(messages)
    if layout == "raft":
        return with_raft_documents(messages, chunks)
    listed = "\n\n".join(
        f"[{i}] {chunk.title or chunk.document_id}\n{chunk.text}"
        for i, chunk in enumerate(chunks, 1)
    )
    block = f"{SOURCES_INSTRUCTION}\n\nSources:\n{listed}"
    if messages and messages[0].role == "system":
        head = ChatMessage(role="system", content=f"{messages[0].content}\n\n{block}")
        return [head, *messages[1:]]
    return [ChatMessage(role="system", content=block), *messages]


def with_raft_documents(
    messages: Sequence[ChatMessage], chunks: Sequence[RetrievedChunk]
) -> list[ChatMessage]:
    """The last user turn rewritten as the trainer's RAFT prompt (instruction, documents).

    The client's own system prompt is kept; without one, the trainer's is used, so a request
    looks exactly like the examples the serving adapter learned from.
    """
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        return list(messages)
    documents = [prompting.Document(c.text, c.title) for c in chunks]
    turn = ChatMessage(
        role="user", content=prompting.raft_prompt(messages[last].content, documents)
    )
    out = [*messages[:last], turn, *messages[last + 1 :]]
    if out[0].role != "system":
        out.insert(0, ChatMessage(role="system", content=prompting.SYSTEM_PROMPT))
    return out


def sources_footer(chunks: Sequence[RetrievedChunk]) -> str:
    """The numbered source list appended to an answer, so answers always cite their sources.

    Each source is named by its document's title and id, never by `source`: that label came
    from whoever added the document and once held its path on the ingesting server (#18).
    """
    if not chunks:
        return ""
    names = [
        f"[{i}] {c.title} ({c.document_id})" if c.title else f"[{i}] {c.document_id}"
        for i, c in enumerate(chunks, 1)
    ]
    return "\n\nSources: " + "; ".join(names)


class StopScanner:
    """Cuts streamed text at the first stop string, holding back what could start one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add text; return what is safe to send now."""
        if self.stopped:
            return ""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        cut = max(0, len(self.pending) - self.hold)
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out

    def flush(self) -> str:
        """The held-back tail once generation ended without a stop string."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


@dataclass(frozen=True)
class ToolCall:
    """A function call in an answer: its id, the function's name and its arguments as JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class NativeTools:
    """The client's tool and format fields in OpenAI's shape, for backends that take them as is.

    An upstream vLLM applies its own chat template, tool parser and guided decoding.
    `messages` is the conversation with `tool` turns and assistant `tool_calls` kept, and the
    retrieved sources added the same way as in `GenerationRequest.messages`.
    """

    messages: tuple[Mapping[str, object], ...]
    tools: tuple[Mapping[str, object], ...] = ()
    tool_choice: str | Mapping[str, object] | None = None
    parallel_tool_calls: bool | None = None
    response_format: Mapping[str, object] | None = None
