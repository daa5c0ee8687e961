"""Admin HTTP routes: start a run, see its progress, list, promote and roll back adapters.

Every route is scoped to the caller's tenant (issue #11): an admin key starts runs only for its
own tenant, sees only its tenant's runs and pending examples, and lists and promotes only the
adapters trained by its tenant's runs (an adapter's card names its run; the run names its
tenant). Adapters without a run (added by hand) are left to the operator's `raftloop adapters`
commands. The serving alias is shared by every tenant of one deployment: any admin sees what it
serves, and may roll it back only while it serves an adapter of the admin's own tenant.
"""

# No `from __future__ import annotations`: FastAPI must resolve the local `Admin` alias.
import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from raftloop_core.api import ApiError, Caller, KeyStore, require
from raftloop_core.events import Tenant
from raftloop_core.registry import AdapterCard, AdapterRefused
from raftloop_trainer import promotion
from raftloop_trainer.settings import TrainerSettings

if TYPE_CHECKING:
    from raftloop_trainer.app import Scheduler


class TrainRequest(BaseModel):
    """Start a run for a tenant: the caller's own, which is also the default."""

    tenant: Tenant | None = None


class SwitchRequest(BaseModel):
    """Why an alias is switched by hand."""

    reason: str | None = Field(default=None, max_length=500)


def build_router(settings: TrainerSettings, *, keys: KeyStore, scheduler: "Scheduler") -> APIRouter:
    """Routes under /v1 that need the admin role, each scoped to the caller's tenant."""
    router = APIRouter(prefix="/v1")
    Admin = Annotated[Caller, Depends(require(keys, "admin"))]
    runner = scheduler.runner
    registry = runner.registry

    def owned(tenant: str) -> list[AdapterCard]:
        """The registered adapters trained by the tenant's runs, oldest first."""
        run_ids = runner.store.run_ids(tenant)
        return [c for c in registry.list() if c.run_id is not None and c.run_id in run_ids]

    @router.post("/admin/train", status_code=202)
    async def train(caller: Admin, body: TrainRequest | None = None) -> dict[str, Any]:
        tenant = body.tenant if body and body.tenant else caller.tenant
        if tenant != caller.tenant:
            raise ApiError(
                403,
                f"this admin key belongs to tenant {caller.tenant!r} and may train only its "
                f"data, not tenant {tenant!r}'s; omit `tenant`, or use an admin key of {tenant!r}",
                code="forbidden",
                param="tenant",
            )
        if not scheduler.start_run(tenant, f"on demand by {caller.key_id}"):
            raise ApiError(
                409,
                "a training run is already in progress (one at a time per trainer); try again "
                "when `busy` in GET /v1/admin/training is false",
                code="run_in_progress",
            )
        return {"started": True, "tenant": tenant}

    @router.get("/admin/training")
    async def training(caller: Admin) -> dict[str, Any]:
        # `running` is only the caller's tenant's run; `busy` says that some run holds the
        # trainer (it runs one at a time, so a start would get 409), without saying whose.
        status = await asyncio.to_thread(runner.status, caller.tenant)
        pending = await asyncio.to_thread(runner.store.pending)
        threshold = settings.trigger_policy().min_new_examples
        return status | {
            "busy": scheduler.busy,
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
                if p.base_model == runner.base_model and p.tenant == caller.tenant
            ],
        }

    @router.get("/adapters")
    async def adapters(caller: Admin) -> dict[str, Any]:
        cards = await asyncio.to_thread(owned, caller.tenant)
        serving = await asyncio.to_thread(registry.serving, settings.alias)
        return {
            "serving": serving.model_dump(mode="json"),
            "adapters": [c.model_dump(mode="json") for c in cards],
        }

    @router.post("/adapters/{adapter_id}/promote")
    async def promote(adapter_id: str, caller: Admin, body: SwitchRequest | None = None) -> Any:
        # Another tenant's adapter answers exactly like a missing one: its existence is not
        # the caller's to know.
        cards = await asyncio.to_thread(owned, caller.tenant)
        if adapter_id not in {c.adapter_id for c in cards}:
            raise ApiError(
                404,
                f"no adapter {adapter_id[:80]!r} among tenant {caller.tenant!r}'s adapters; "
                "list them with GET /v1/adapters",
                code="adapter_not_found",
            )
        try:
            state = await promotion.promote(
                registry,
                runner.sink,
                adapter_id,
                alias=settings.alias,
                base_model=runner.base_model,
                tenant=caller.tenant,
                reason=(body or SwitchRequest()).reason,
            )
        except AdapterRefused as exc:
            raise ApiError(404, str(exc), code="adapter_not_found") from exc
        return state.model_dump(mode="json")

    @router.post("/adapters/rollback")
    async def rollback(caller: Admin, body: SwitchRequest | None = None) -> Any:
        current = (await asyncio.to_thread(registry.serving, settings.alias)).adapter_id
        if current is None:
            raise ApiError(
                409,
                f"alias {settings.alias!r} serves the base model; nothing to roll back",
                code="nothing_to_roll_back",
            )
        if current not in {c.adapter_id for c in await asyncio.to_thread(owned, caller.tenant)}:
            raise ApiError(
                403,
                f"alias {settings.alias!r} serves adapter {current[:12]}, which was not trained "
                f"on tenant {caller.tenant!r}'s data, so this key cannot roll it back; the alias "
                "is shared by every tenant of this deployment: ask its operator "
                "(`raftloop adapters rollback` on the trainer's host)",
                code="forbidden",
            )
        try:
            state = await promotion.rollback(
                registry,
                runner.sink,
                alias=settings.alias,
                base_model=runner.base_model,
                tenant=caller.tenant,
                reason=(body or SwitchRequest()).reason,
            )
        except ValueError as exc:
            raise ApiError(409, str(exc), code="nothing_to_roll_back") from exc
        return state.model_dump(mode="json")

    return router
