"""Admin routes: the caller's tenant's read-only view of what serves it (admin role only).

Alias switching has one owner, the trainer (issue #17): promotion, rollback and the canary are
its routes, each scoped to the key's tenant. The gateway's old write routes answer 410 with
the trainer route to use instead, so scripts written for them fail loudly, not silently.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from raftloop_core.api import Caller
from raftloop_core.registry import AdapterCard
from raftloop_gateway.chat import ChatService
from raftloop_gateway.domain import GatewayError

TRAINER = "the trainer (default http://127.0.0.1:8004) or `raftloop adapters`"


class Moved(GatewayError):
    """Alias switches moved to the trainer, which owns them."""

    status = 410
    code = "moved_to_trainer"


class AdaptersView(BaseModel):
    """What serves the caller's tenant now and what could."""

    tenant: str
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

    @router.get("/adapters", response_model=AdaptersView)
    async def adapters(caller: Caller = admin_key) -> AdaptersView:
        """The caller's tenant's adapters and its serving and canary state."""
        now = await state.of(caller.tenant)
        return AdaptersView(
            tenant=caller.tenant,
            alias=state.alias,
            serving=now.serving,
            revision=now.revision,
            last_error=now.last_error,
            canary_adapter_id=now.canary.adapter_id,
            canary_share=now.canary.share,
            adapters=await state.cards(caller.tenant),
        )

    @router.post("/adapters/promote", status_code=410, dependencies=[admin_key])
    async def promote() -> None:
        """Moved: POST /v1/adapters/{adapter_id}/promote on the trainer."""
        raise Moved(
            "the gateway no longer switches aliases; promote with POST "
            f"/v1/adapters/{{adapter_id}}/promote on {TRAINER}"
        )

    @router.post("/adapters/rollback", status_code=410, dependencies=[admin_key])
    async def rollback() -> None:
        """Moved: POST /v1/adapters/rollback on the trainer."""
        raise Moved(
            f"the gateway no longer switches aliases; roll back with POST /v1/adapters/rollback "
            f"on {TRAINER}"
        )

    @router.put("/canary", status_code=410, dependencies=[admin_key])
    async def canary() -> None:
        """Moved: PUT /v1/adapters/canary on the trainer."""
        raise Moved(
            f"the gateway no longer sets canaries; use PUT /v1/adapters/canary on {TRAINER}"
        )

    return router
