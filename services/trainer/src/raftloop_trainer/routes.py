"""Admin HTTP routes: start a run, see its progress, list, promote and roll back adapters.

Every route is scoped to the caller's tenant (issues #11, #17): an admin key starts runs only
for its own tenant, sees only its tenant's runs and pending examples, and lists, promotes, rolls
back and canaries only its own tenant's alias and the adapters trained on its tenant's data (the
card names the tenant). These are the only HTTP routes that switch an alias; the gateway follows.
"""

# No `from __future__ import annotations`: FastAPI must resolve the local `Admin` alias.
import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from raftloop_core.api import ApiError, Caller, KeyStore, require
from raftloop_core.events import Tenant
from raftloop_core.registry import AdapterCard, AdapterRefused, OtherTenantsAdapter
from raftloop_trainer import promotion
from raftloop_trainer.domain import NotStarted, holdout_shortfall
from raftloop_trainer.settings import TrainerSettings

if TYPE_CHECKING:
    from raftloop_trainer.app import Scheduler


class TrainRequest(BaseModel):
    """Start a run for a tenant: the caller's own, which is also the default."""

    tenant: Tenant | None = None


class SwitchRequest(BaseModel):
    """Why an alias is switched by hand."""

    reason: str | None = Field(default=None, max_length=500)


class CanaryRequest(BaseModel):
    """Send `share` of the tenant's conversations (sticky) to `adapter_id`; null or 0 = off."""

    adapter_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    share: float = Field(ge=0.0, le=1.0)
    reason: str | None = Field(default=None, max_length=500)


def _not_found(adapter_id: str, tenant: str) -> ApiError:
    # Another tenant's adapter answers exactly like a missing one: its existence is not the
    # caller's to know.
    return ApiError(
        404,
        f"no adapter {adapter_id[:80]!r} among tenant {tenant!r}'s adapters; "
        "list them with GET /v1/adapters",
        code="adapter_not_found",
    )


def build_router(settings: TrainerSettings, *, keys: KeyStore, scheduler: "Scheduler") -> APIRouter:
    """Routes under /v1 that need the admin role, each scoped to the caller's tenant."""
    router = APIRouter(prefix="/v1")
    Admin = Annotated[Caller, Depends(require(keys, "admin"))]
    runner = scheduler.runner
    registry = runner.registry

    def owned(tenant: str) -> list[AdapterCard]:
        """The registered adapters trained on the tenant's data, oldest first."""
        return registry.list(tenant)

    @router.post("/admin/train", status_code=202)
    async def train(caller: Admin, body: TrainRequest | None = None) -> dict[str, Any]:
        """Start a training run on the tenant's examples, and say whether it started.

        202 `{"started": true, "tenant", "run_id"}`: the run began; follow it with
        `GET /v1/admin/training`. No run started: 409 in the error envelope, its `code` saying
        why, for a client to act on:

        - `run_in_progress`: a run (of any tenant: one at a time per trainer) holds the
          trainer; retry when it ends (`busy` in `GET /v1/admin/training`).
        - `nothing_to_train`: the tenant has no training examples for the base model yet;
          curate some in the review UI first. A run on demand needs no minimum of new examples
          (`TRAINER_MIN_NEW_EXAMPLES` is for the automatic triggers): it trains on all of them.
        """
        tenant = body.tenant if body and body.tenant else caller.tenant
        if tenant != caller.tenant:
            raise ApiError(
                403,
                f"this admin key belongs to tenant {caller.tenant!r} and may train only its "
                f"data, not tenant {tenant!r}'s; omit `tenant`, or use an admin key of {tenant!r}",
                code="forbidden",
                param="tenant",
            )
        outcome = await scheduler.run_now(tenant, f"on demand by {caller.key_id}")
        if isinstance(outcome, NotStarted):
            raise ApiError(409, outcome.reason, code=outcome.code)
        return {"started": True, "tenant": tenant, "run_id": outcome.run_id}

    @router.get("/admin/training")
    async def training(caller: Admin) -> dict[str, Any]:
        # `running` is only the caller's tenant's run; `busy` says that some run holds the
        # trainer (it runs one at a time, so a start would get 409), without saying whose.
        status = await asyncio.to_thread(runner.status, caller.tenant)
        pending = await asyncio.to_thread(runner.store.pending)
        policy = settings.trigger_policy()
        threshold = policy.min_new_examples
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
                    "holdout_examples": p.holdout_examples,
                    "min_holdout_items": policy.min_holdout_items,
                    "waiting_for": holdout_shortfall(p, policy),
                }
                for p in pending
                if p.base_model == runner.base_model and p.tenant == caller.tenant
            ],
        }

    @router.get("/adapters")
    async def adapters(caller: Admin) -> dict[str, Any]:
        cards = await asyncio.to_thread(owned, caller.tenant)
        serving = await asyncio.to_thread(registry.serving, settings.alias, caller.tenant)
        return {
            "serving": serving.model_dump(mode="json"),
            "adapters": [c.model_dump(mode="json") for c in cards],
        }

    @router.post("/adapters/{adapter_id}/promote")
    async def promote(adapter_id: str, caller: Admin, body: SwitchRequest | None = None) -> Any:
        cards = await asyncio.to_thread(owned, caller.tenant)
        if adapter_id not in {c.adapter_id for c in cards}:
            raise _not_found(adapter_id, caller.tenant)
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
        except OtherTenantsAdapter as exc:
            raise _not_found(adapter_id, caller.tenant) from exc
        except AdapterRefused as exc:
            raise ApiError(404, str(exc), code="adapter_not_found") from exc
        return state.model_dump(mode="json")

    @router.post("/adapters/rollback")
    async def rollback(caller: Admin, body: SwitchRequest | None = None) -> Any:
        serving = await asyncio.to_thread(registry.serving, settings.alias, caller.tenant)
        if serving.adapter_id is None:
            raise ApiError(
                409,
                f"tenant {caller.tenant!r}'s alias {settings.alias!r} serves the base model; "
                "nothing to roll back",
                code="nothing_to_roll_back",
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
        except AdapterRefused as exc:
            raise ApiError(409, str(exc), code="adapter_refused") from exc
        except ValueError as exc:
            raise ApiError(409, str(exc), code="nothing_to_roll_back") from exc
        return state.model_dump(mode="json")

    @router.put("/adapters/canary")
    async def canary(body: CanaryRequest, caller: Admin) -> Any:
        """Set the caller's tenant's canary adapter and its share of conversations."""
        try:
            state = await promotion.set_canary(
                registry,
                body.adapter_id,
                body.share,
                alias=settings.alias,
                tenant=caller.tenant,
                reason=body.reason,
            )
        except OtherTenantsAdapter as exc:
            raise _not_found(body.adapter_id or "", caller.tenant) from exc
        except AdapterRefused as exc:
            raise ApiError(404, str(exc), code="adapter_not_found") from exc
        return state.model_dump(mode="json")

    return router
