"""Admin HTTP routes: runs and their progress, adapters, and the tenant's regression set.

Every route is scoped to the caller's tenant (issues #11, #17): an admin key starts runs only
for its own tenant, sees only its tenant's runs and pending examples, and lists, promotes, rolls
back and canaries only its own tenant's alias and the adapters trained on its tenant's data (the
card names the tenant). These are the only HTTP routes that switch an alias; the gateway follows.
An admin key reads and replaces only its own tenant's regression set (issue #19).
"""

# No `from __future__ import annotations`: FastAPI must resolve the local `Admin` alias.
import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from raftloop_core.api import ApiError, Caller, KeyStore, require
from raftloop_core.events import Tenant
from raftloop_core.registry import AdapterCard, AdapterRefused, OtherTenantsAdapter
from raftloop_trainer import promotion
from raftloop_trainer.domain import (
    MAX_REGRESSION_ANSWER_CHARS,
    MAX_REGRESSION_ITEMS,
    MAX_REGRESSION_QUESTION_CHARS,
    REGRESSION_ID_PATTERN,
    NotStarted,
    RegressionItem,
    duplicate_ids,
    waiting_for,
)
from raftloop_trainer.settings import TrainerSettings
from raftloop_trainer.store import DatasetStore, RegressionSet

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
    _start_route(router, keys, scheduler)
    _status_route(router, settings, keys, scheduler)
    _adapter_routes(router, settings, keys, scheduler)
    _alias_routes(router, settings, keys, scheduler)
    return router


def _start_route(router: APIRouter, keys: KeyStore, scheduler: "Scheduler") -> None:
    """Start a run on demand."""
    Admin = Annotated[Caller, Depends(require(keys, "admin"))]

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


def _status_route(
    router: APIRouter, settings: TrainerSettings, keys: KeyStore, scheduler: "Scheduler"
) -> None:
    """Follow the tenant's runs and its pending examples."""
    Admin = Annotated[Caller, Depends(require(keys, "admin"))]
    runner = scheduler.runner

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
            "recipe": settings.recipe,
            "pending": [
                {
                    "tenant": p.tenant,
                    "base_model": p.base_model,
                    "new_examples": p.new_examples,
                    "threshold": threshold,
                    "holdout_examples": p.holdout_examples,
                    "min_holdout_items": policy.min_holdout_items,
                    "waiting_for": waiting_for(p, policy),
                    "pairs": p.pairs,
                    "min_pairs": settings.min_pairs,
                }
                for p in pending
                if p.base_model == runner.base_model and p.tenant == caller.tenant
            ],
        }


def _adapter_routes(
    router: APIRouter, settings: TrainerSettings, keys: KeyStore, scheduler: "Scheduler"
) -> None:
    """List the tenant's adapters, and promote one of them."""
    Admin = Annotated[Caller, Depends(require(keys, "admin"))]
    runner = scheduler.runner
    registry = runner.registry

    def owned(tenant: str) -> list[AdapterCard]:
        """The registered adapters trained on the tenant's data, oldest first."""
        return registry.list(tenant)

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


def _alias_routes(
    router: APIRouter, settings: TrainerSettings, keys: KeyStore, scheduler: "Scheduler"
) -> None:
    """Roll the tenant's alias back, and set its canary."""
    Admin = Annotated[Caller, Depends(require(keys, "admin"))]
    runner = scheduler.runner
    registry = runner.registry

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


# ---------------------------------------------------------------- regression set (issue #19)


Question = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_REGRESSION_QUESTION_CHARS
    ),
]
Answer = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_REGRESSION_ANSWER_CHARS),
]


class RegressionItemIn(BaseModel):
    """One general question and the answer it should still get after training."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=REGRESSION_ID_PATTERN, description="Unique within the set.")
    question: Question
    answer: Answer

    @model_validator(mode="after")
    def _plain_text(self) -> "RegressionItemIn":
        # PostgreSQL stores no NUL in text: refused here rather than failing as a 500 there.
        if "\x00" in self.question or "\x00" in self.answer:
            raise PydanticCustomError("nul", "question and answer must not contain NUL (\\u0000)")
        return self


class RegressionSetIn(BaseModel):
    """A tenant's whole regression set: `PUT` replaces the previous one (`[]` removes it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[RegressionItemIn] = Field(max_length=MAX_REGRESSION_ITEMS)

    @model_validator(mode="after")
    def _unique_ids(self) -> "RegressionSetIn":
        repeated = duplicate_ids(i.id for i in self.items)
        if repeated:
            shown = ", ".join(repr(r[:40]) for r in repeated[:5])
            raise PydanticCustomError(
                "duplicate_ids", f"item ids must be unique within the set; repeated: {shown}"
            )
        return self


async def _admin(request: Request) -> Caller:
    """The calling admin, checked against the key store that `create_app` keeps in app.state."""
    return await require(request.app.state.keys, "admin")(request)


def _store(request: Request) -> DatasetStore:
    store: DatasetStore = request.app.state.scheduler.runner.store
    return store


def _settings(request: Request) -> TrainerSettings:
    settings: TrainerSettings = request.app.state.scheduler.settings
    return settings


AdminCaller = Annotated[Caller, Depends(_admin)]
Store = Annotated[DatasetStore, Depends(_store)]
Settings = Annotated[TrainerSettings, Depends(_settings)]

regression_router = APIRouter(prefix="/v1/admin")


def _regression_json(tenant: str, got: RegressionSet, limit: int) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "items": [{"id": i.item_id, "question": i.question, "answer": i.answer} for i in got.items],
        "updated_at": got.updated_at.isoformat() if got.updated_at else None,
        "checked_per_run": min(len(got.items), limit),
        "max_items": MAX_REGRESSION_ITEMS,
    }


@regression_router.get("/regression")
async def get_regression(caller: AdminCaller, store: Store, settings: Settings) -> dict[str, Any]:
    """The caller's tenant's regression set: the general questions every run checks.

    A run checks the first `TRAINER_REGRESSION_ITEMS` of them (`checked_per_run`); with none,
    its report says that forgetting was not checked.
    """
    got = await asyncio.to_thread(store.regression_set, caller.tenant)
    return _regression_json(caller.tenant, got, settings.regression_items)


@regression_router.put("/regression")
async def put_regression(
    body: RegressionSetIn, caller: AdminCaller, store: Store, settings: Settings
) -> dict[str, Any]:
    """Replace the caller's tenant's whole regression set; answer with the stored set."""
    items = [RegressionItem(i.id, i.question, i.answer) for i in body.items]
    try:
        got = await asyncio.to_thread(store.replace_regression, caller.tenant, items)
    except ValueError as exc:  # the store's own check of the same limits, should they differ
        raise ApiError(
            400, f"invalid request: {exc}", code="invalid_request", param="items"
        ) from exc
    return _regression_json(caller.tenant, got, settings.regression_items)
