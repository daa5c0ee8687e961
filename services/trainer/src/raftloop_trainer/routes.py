"""Admin HTTP routes: start a run, see its progress, list, promote and roll back adapters."""

# No `from __future__ import annotations`: FastAPI must resolve the local `Admin` alias.
import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from raftloop_core.api import ApiError, Caller, KeyStore, require
from raftloop_core.events import DEFAULT_TENANT, Tenant
from raftloop_core.registry import AdapterRefused
from raftloop_trainer import promotion
from raftloop_trainer.settings import TrainerSettings

if TYPE_CHECKING:
    from raftloop_trainer.app import Scheduler


class TrainRequest(BaseModel):
    """Start a run for a tenant."""

    tenant: Tenant = DEFAULT_TENANT


class SwitchRequest(BaseModel):
    """Why an alias is switched by hand."""

    reason: str | None = Field(default=None, max_length=500)


def build_router(settings: TrainerSettings, *, keys: KeyStore, scheduler: "Scheduler") -> APIRouter:
    """Routes under /v1 that need the admin role."""
    router = APIRouter(prefix="/v1")
    Admin = Annotated[Caller, Depends(require(keys, "admin"))]
    runner = scheduler.runner
    registry = runner.registry

    @router.post("/admin/train", status_code=202)
    async def train(caller: Admin, body: TrainRequest | None = None) -> dict[str, Any]:
        tenant = (body or TrainRequest()).tenant
        if not scheduler.start_run(tenant, f"on demand by {caller.key_id}"):
            raise ApiError(409, "a training run is already in progress", code="run_in_progress")
        return {"started": True, "tenant": tenant}

    @router.get("/admin/training")
    async def training(caller: Admin) -> dict[str, Any]:
        pending = await asyncio.to_thread(runner.store.pending)
        threshold = settings.trigger_policy().min_new_examples
        return runner.status() | {
            "auto_train": settings.auto_train,
            "threshold": threshold,
            "pending": [
                {
                    "tenant": p.tenant,
                    "base_model": p.base_model,
                    "new_examples": p.new_examples,
                    "threshold": threshold,
                }
                for p in pending
                if p.base_model == runner.base_model
            ],
        }

    @router.get("/adapters")
    async def adapters(caller: Admin) -> dict[str, Any]:
        return {
            "serving": registry.serving(settings.alias).model_dump(mode="json"),
            "adapters": [c.model_dump(mode="json") for c in registry.list()],
        }

    @router.post("/adapters/{adapter_id}/promote")
    async def promote(adapter_id: str, caller: Admin, body: SwitchRequest | None = None) -> Any:
        try:
            state = await promotion.promote(
                registry,
                runner.sink,
                adapter_id,
                alias=settings.alias,
                base_model=runner.base_model,
                reason=(body or SwitchRequest()).reason,
            )
        except AdapterRefused as exc:
            raise ApiError(404, str(exc), code="adapter_not_found") from exc
        return state.model_dump(mode="json")

    @router.post("/adapters/rollback")
    async def rollback(caller: Admin, body: SwitchRequest | None = None) -> Any:
        try:
            state = await promotion.rollback(
                registry,
                runner.sink,
                alias=settings.alias,
                base_model=runner.base_model,
                reason=(body or SwitchRequest()).reason,
            )
        except ValueError as exc:
            raise ApiError(409, str(exc), code="nothing_to_roll_back") from exc
        return state.model_dump(mode="json")

    return router
