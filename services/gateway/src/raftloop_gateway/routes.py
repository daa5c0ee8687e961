"""The OpenAI-compatible routes: chat completions (streamed or not), models, feedback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response, StreamingResponse

from raftloop_core.api import Caller, error_body
from raftloop_core.events import Feedback, FeedbackReceived
from raftloop_core.topics import Topic
from raftloop_gateway import render
from raftloop_gateway.chat import ChatService, Turn
from raftloop_gateway.domain import GatewayError, sources_footer
from raftloop_gateway.schemas import (
    ChatCompletion,
    ChatRequest,
    FeedbackAccepted,
    FeedbackRequest,
    ModelCard,
    ModelList,
)

log = logging.getLogger(__name__)
DISCONNECT_POLL_S = 0.5


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
        turn = await service.prepare(body, caller, x_raftloop_conversation_id)
        footer = sources_footer(turn.retrieved) if service.settings.rag_cite else ""
        if body.stream:
            stack = contextlib.AsyncExitStack()
            await stack.enter_async_context(service.admission.slot())
            return ClosingStreamingResponse(
                _stream(service, turn, footer, stack),
                media_type="text/event-stream",
                headers=turn.headers | {"cache-control": "no-cache"},
            )
        if not await _complete_unless_gone(service, turn, request):
            log.info("client left before its answer", extra={"interaction_id": turn.interaction_id})
            return Response(status_code=499)  # nobody reads it; nothing was answered
        return Response(
            render.completion(turn, footer).model_dump_json(),
            media_type="application/json",
            headers=turn.headers,
        )

    @router.get("/models", response_model=ModelList)
    async def list_models(caller: Caller = any_key) -> ModelList:
        """The served alias, the base model and every registered adapter."""
        now = int(time.time())
        base = service.backend.base_model
        serving = service.state.serving
        data = [
            ModelCard(id=service.settings.served_model, created=now, kind="alias", base_model=base),
            ModelCard(id=base, created=now, kind="base", serving=serving is None),
        ]
        for card in await service.state.cards():
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
        return UUID(value)
    except ValueError as exc:
        raise GatewayError(
            "interaction_id must be the id of a completion (a UUID)", param="interaction_id"
        ) from exc


async def _stream(
    service: ChatService, turn: Turn, footer: str, stack: contextlib.AsyncExitStack
) -> AsyncIterator[bytes]:
    aborted = True
    try:
        yield render.chunk(turn, content="", role=True)
        async with contextlib.aclosing(service.backend.generate(turn.generation)) as pieces:
            async for piece in pieces:
                turn.add(piece)
                if piece.text or piece.tokens:
                    yield render.chunk(turn, content=piece.text, tokens=piece.tokens)
        if footer:
            yield render.chunk(turn, content=footer)
        yield render.chunk(turn, finish=turn.finish_reason or "stop")
        body = turn.body
        if body.stream_options is not None and body.stream_options.include_usage:
            yield render.usage_chunk(turn)
        yield render.DONE
        aborted = False
    except GatewayError as exc:
        aborted = False
        turn.finish_reason = "error"
        yield render.sse(json.dumps(error_body(exc.status, exc.message, code=exc.code)))
    except Exception:
        log.exception("generation failed mid-stream", extra={"id": str(turn.interaction_id)})
        aborted = False
        turn.finish_reason = "error"
        yield render.sse(json.dumps(error_body(500, "generation failed; see the gateway log")))
    finally:
        service.finish(turn, aborted=aborted)
        await stack.aclose()


async def _complete_unless_gone(service: ChatService, turn: Turn, request: Request) -> bool:
    """Generate a whole answer; stop (and free the slot) if the client disconnects first.

    A client that timed out would otherwise keep its place in the queue and a generation slot
    for an answer nobody reads, so an overloaded gateway would spend its time on dead requests.
    """

    async def complete() -> None:
        generation = contextlib.aclosing(service.backend.generate(turn.generation))
        async with service.admission.slot(), generation as pieces:
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
