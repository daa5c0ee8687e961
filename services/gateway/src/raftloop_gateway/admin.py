"""Admin routes: the adapter list, promotion, rollback and the canary share (admin role only)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from raftloop_core.api import Caller
from raftloop_core.events import AdapterPromoted, AdapterRolledBack
from raftloop_core.registry import AdapterCard, AdapterRefused
from raftloop_core.topics import Topic
from raftloop_gateway.chat import ChatService
from raftloop_gateway.domain import AdapterUnavailable, GatewayError
from raftloop_gateway.hotswap import Canary

ADAPTER_ID = r"^[0-9a-f]{64}$"


class Conflict(GatewayError):
    """The requested switch is not possible in the current state."""

    status = 409
    code = "conflict"


class PromoteRequest(BaseModel):
    """Point the serving alias at an adapter."""

    adapter_id: str = Field(pattern=ADAPTER_ID)
    reason: str | None = Field(default=None, max_length=500)


class RollbackRequest(BaseModel):
    """Switch the serving alias back."""

    reason: str | None = Field(default=None, max_length=500)


class CanaryRequest(BaseModel):
    """Send `share` of conversations (sticky) to `adapter_id`; null or 0 turns it off."""

    adapter_id: str | None = Field(default=None, pattern=ADAPTER_ID)
    share: float = Field(ge=0.0, le=1.0)


class AdaptersView(BaseModel):
    """What serves now and what could."""

    alias: str
    serving: str | None
    revision: int
    last_error: str | None
    canary_adapter_id: str | None
    canary_share: float
    adapters: list[AdapterCard]


def build_admin_router(service: ChatService, *, admin_key: Any) -> APIRouter:
    """The `/v1/admin` routes."""
    router = APIRouter(prefix="/v1/admin", tags=["admin"])
    state = service.state

    async def view() -> AdaptersView:
        return AdaptersView(
            alias=state.alias,
            serving=state.serving,
            revision=state.revision,
            last_error=state.last_error,
            canary_adapter_id=state.canary.adapter_id,
            canary_share=state.canary.share,
            adapters=await state.cards(),
        )

    @router.get("/adapters", response_model=AdaptersView)
    async def adapters(caller: Caller = admin_key) -> AdaptersView:
        """Registered adapters and the serving and canary state."""
        return await view()

    @router.post("/adapters/promote", response_model=AdaptersView)
    async def promote(body: PromoteRequest, caller: Caller = admin_key) -> AdaptersView:
        """Verify and load an adapter, then point the serving alias at it."""
        previous = state.serving
        await state.verify(body.adapter_id)
        try:
            alias = await asyncio.to_thread(
                state.registry.promote, body.adapter_id, state.alias, body.reason
            )
        except AdapterRefused as exc:
            raise AdapterUnavailable(str(exc), param="adapter_id") from exc
        card = await asyncio.to_thread(state.registry.card, body.adapter_id)
        await state.refresh()
        if service.sink is not None:
            service.sink.submit(
                Topic.ADAPTER_PROMOTED,
                AdapterPromoted(
                    alias=state.alias,
                    adapter_id=body.adapter_id,
                    previous_adapter_id=previous,
                    base_model=card.base_model,
                    run_id=card.run_id,
                    dataset_version=card.dataset_version,
                    revision=alias.revision,
                    metrics=card.metrics,
                ),
            )
        return await view()

    @router.post("/adapters/rollback", response_model=AdaptersView)
    async def rollback(body: RollbackRequest, caller: Caller = admin_key) -> AdaptersView:
        """Switch the serving alias back to what served before."""
        previous = state.serving
        try:
            alias = await asyncio.to_thread(state.registry.rollback, state.alias, body.reason)
        except AdapterRefused as exc:
            raise AdapterUnavailable(str(exc)) from exc
        except ValueError as exc:
            raise Conflict(str(exc)) from exc
        await state.refresh()
        if service.sink is not None:
            service.sink.submit(
                Topic.ADAPTER_ROLLED_BACK,
                AdapterRolledBack(
                    alias=state.alias,
                    from_adapter_id=previous,
                    to_adapter_id=alias.adapter_id,
                    base_model=service.backend.base_model,
                    revision=alias.revision,
                    reason=body.reason,
                ),
            )
        return await view()

    @router.put("/canary", response_model=AdaptersView)
    async def canary(body: CanaryRequest, caller: Caller = admin_key) -> AdaptersView:
        """Set the canary adapter and its share of conversations."""
        if body.adapter_id is not None and body.share > 0:
            await state.verify(body.adapter_id)
        state.set_canary(Canary(body.adapter_id, body.share if body.adapter_id else 0.0))
        return await view()

    return router
