"""The OpenAI-compatible routes: chat completions (streamed or not), models, feedback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from raftloop_core.api import Caller, error_body
from raftloop_core.events import Feedback, FeedbackReceived
from raftloop_core.topics import Topic
from raftloop_gateway import render
from raftloop_gateway.chat import REQUEST_ID_HEADER, ChatService, Turn
from raftloop_gateway.domain import GatewayError, Lane, TokenInfo, sources_footer
from raftloop_gateway.schemas import (
    ChatCompletion,
    ChatRequest,
    Delta,
    FeedbackAccepted,
    FeedbackRequest,
    ModelCard,
    ModelList,
)

log = logging.getLogger(__name__)
DISCONNECT_POLL_S = 0.5
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def build_router(service: ChatService, *, any_key: Any, chat_key: Any) -> APIRouter:
    """The `/v1` routes; `any_key` and `chat_key` are the auth dependencies."""
    router = APIRouter(prefix="/v1")

    @router.post(
        "/chat/completions",
        response_model=ChatCompletion,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def chat_completions(
        request: Request,
        body: ChatRequest,
        caller: Caller = chat_key,
        x_raftloop_conversation_id: Annotated[str | None, Header(max_length=128)] = None,
    ) -> Response:
        """Create a chat completion (OpenAI-compatible)."""
        turn = await service.prepare(
            body, caller, x_raftloop_conversation_id, request_id=request_id_of(request)
        )
        footer = sources_footer(turn.retrieved) if service.settings.rag_cite else ""
        if turn.generation.stream:
            stack = contextlib.AsyncExitStack()
            await stack.enter_async_context(service.admission.slot(turn.lane))
            return ClosingStreamingResponse(
                _stream(service, turn, footer, stack),
                media_type="text/event-stream",
                headers=turn.headers | {"cache-control": "no-cache"},
            )
        if not await _complete_unless_gone(service, turn, request, lane=turn.lane):
            log.info("client left before its answer", extra={"interaction_id": turn.interaction_id})
            return Response(status_code=499)  # nobody reads it; nothing was answered
        return Response(
            render.completion(turn, footer).model_dump_json(),
            media_type="application/json",
            headers=turn.headers,
        )

    @router.get("/models", response_model=ModelList)
    async def list_models(caller: Caller = any_key) -> ModelList:
        """The served alias, the base model and the caller's tenant's adapters."""
        now = int(time.time())
        base = service.backend.base_model
        serving = (await service.state.of(caller.tenant)).serving
        data = [
            ModelCard(id=service.settings.served_model, created=now, kind="alias", base_model=base),
            ModelCard(id=base, created=now, kind="base", serving=serving is None),
        ]
        for card in await service.state.cards(caller.tenant):
            data.append(
                ModelCard(
                    id=card.adapter_id,
                    created=int(card.created_at.timestamp()),
                    base_model=card.base_model,
                    serving=card.adapter_id == serving,
                )
            )
        return ModelList(data=data)

    @router.post("/feedback", response_model=FeedbackAccepted, status_code=202)
    async def feedback(body: FeedbackRequest, caller: Caller = any_key) -> FeedbackAccepted:
        """Record a user's rating (thumbs -1/+1 or stars 1..5) and optional correction."""
        interaction = _uuid(body.interaction_id)
        scale = body.scale or ("thumbs" if body.rating in (-1, 1) else "stars")
        if (scale == "thumbs" and body.rating not in (-1, 1)) or (
            scale == "stars" and not 1 <= body.rating <= 5
        ):
            raise GatewayError("rating must be -1 or +1 for thumbs, 1..5 for stars", param="rating")
        event = FeedbackReceived(
            tenant=caller.tenant,
            interaction_id=interaction,
            key_id=caller.key_id,
            feedback=Feedback(
                feedback_id=uuid4(),
                rating=body.rating,
                scale=scale,
                correction=body.correction,
                comment=body.comment,
            ),
        )
        if service.sink is not None:
            service.sink.submit(Topic.CHAT_FEEDBACK, event)
        return FeedbackAccepted(id=str(event.feedback.feedback_id), interaction_id=str(interaction))

    return router


class ClosingStreamingResponse(StreamingResponse):
    """Closes the body generator as soon as the response ends, disconnects included.

    Starlette leaves a generator suspended at a `yield` when the client goes away; its cleanup
    (the capture of the aborted answer, the release of the generation slot) would then wait
    for the garbage collector.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Send the stream, then close the generator whatever happened."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()


def _uuid(value: str) -> UUID:
    try:
        return UUID(value.removeprefix("chatcmpl-"))
    except ValueError as exc:
        raise GatewayError(
            "interaction_id must be the id of a completion (chatcmpl-... or the UUID in the "
            "x-raftloop-interaction-id header)",
            param="interaction_id",
        ) from exc


def request_id_of(request: Request) -> str:
    """The request's id: the one `RequestIdMiddleware` chose, else the client's, else new."""
    chosen = getattr(request.state, "request_id", None)
    if isinstance(chosen, str):
        return chosen
    return _request_id(request.headers.get(REQUEST_ID_HEADER))


def _request_id(sent: str | None) -> str:
    if sent is not None and _SANE_REQUEST_ID.fullmatch(sent):
        return sent
    return f"req_{uuid4().hex}"


class RequestIdMiddleware:
    """Every response carries `x-request-id`: the client's own when sane, else a new one.

    Pure ASGI (no body buffering), so streamed answers pass straight through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Choose the id, keep it in the request state and put it on the response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == REQUEST_ID_HEADER.encode()), None)
        request_id = _request_id(sent.decode("latin-1") if sent is not None else None)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER not in headers:
                    headers.append(REQUEST_ID_HEADER, request_id)
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _stream(
    service: ChatService, turn: Turn, footer: str, stack: contextlib.AsyncExitStack
) -> AsyncIterator[bytes]:
    aborted = True
    held: dict[int, list[TokenInfo]] = {a.index: [] for a in turn.answers}
    try:
        for answer in turn.answers:
            yield render.chunk(turn, answer.index, Delta(role="assistant", content=""))
        async with contextlib.aclosing(service.backend.generate(turn.generation)) as pieces:
            async for piece in pieces:
                answer = turn.answers[piece.index]
                held[answer.index] += piece.tokens
                for delta in render.deltas(turn.add(piece)):
                    yield render.chunk(turn, answer.index, delta, tokens=held[answer.index])
                    held[answer.index] = []
                if piece.finish_reason:
                    yield _last_chunk(turn, answer.index, footer, held)
        for answer in turn.answers:
            if answer.finish_reason is None:  # a backend that ended without saying why
                answer.finish_reason = "stop"
                yield _last_chunk(turn, answer.index, footer, held)
        stream_options = turn.body.stream_options
        if stream_options is not None and stream_options.include_usage:
            yield render.usage_chunk(turn)
        yield render.DONE
        aborted = False
    except GatewayError as exc:
        aborted = False
        for answer in turn.answers:
            answer.finish_reason = answer.finish_reason or "error"
        yield render.sse(json.dumps(error_body(exc.status, exc.message, code=exc.code)))
    except Exception:
        log.exception("generation failed mid-stream", extra={"id": str(turn.interaction_id)})
        aborted = False
        for answer in turn.answers:
            answer.finish_reason = answer.finish_reason or "error"
        yield render.sse(json.dumps(error_body(500, "generation failed; see the gateway log")))
    finally:
        service.finish(turn, aborted=aborted)
        await stack.aclose()


def _last_chunk(turn: Turn, index: int, footer: str, held: dict[int, list[TokenInfo]]) -> bytes:
    """A choice's final chunk: the sources line of a free-text answer and the finish reason."""
    answer = turn.answers[index]
    cite = footer if turn.plain and not answer.calls else ""
    tokens, held[index] = held[index], []
    delta = Delta(content=cite) if cite else Delta()
    return render.chunk(turn, index, delta, finish=answer.finish, tokens=tokens)


async def _complete_unless_gone(
    service: ChatService, turn: Turn, request: Request, *, lane: Lane = "chat"
) -> bool:
    """Generate whole answers; stop (and free the slot) if the client disconnects first.

    A client that timed out would otherwise keep its place in the queue and a generation slot
    for an answer nobody reads, so an overloaded gateway would spend its time on dead requests.
    """

    async def complete() -> None:
        generation = contextlib.aclosing(service.backend.generate(turn.generation))
        async with service.admission.slot(lane), generation as pieces:
            async for piece in pieces:
                turn.add(piece)

    work = asyncio.ensure_future(complete())
    while not work.done():
        await asyncio.wait({work}, timeout=DISCONNECT_POLL_S)
        if not work.done() and await request.is_disconnected():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return False
    work.result()  # re-raise what generation raised
    service.finish(turn)
    return True
