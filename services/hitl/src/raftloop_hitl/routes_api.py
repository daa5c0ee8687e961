"""The JSON review API (API key or session): claim next, get an item, submit a review."""
# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from raftloop_core.api import ApiError
from raftloop_hitl import domain, policies
from raftloop_hitl.context import Ctx, RowId
from raftloop_hitl.store import ItemView, QueueError
from raftloop_hitl.web import Principal


class ReviewIn(BaseModel):
    """A decision submitted through the API."""

    action: Literal["approved", "corrected", "rejected", "skipped"]
    lease_token: str = Field(min_length=1, max_length=64)
    answer: str | None = Field(default=None, max_length=100_000)
    reason: str | None = Field(default=None, max_length=10_000)
    oracle_chunk_ids: list[str] = Field(default_factory=list, max_length=100)


class LeaseIn(BaseModel):
    """A lease to extend."""

    lease_token: str = Field(min_length=1, max_length=64)


class RoutingPolicyIn(domain.RoutingPolicy):
    """A whole routing policy, as `PUT /api/v1/routing` takes it: every field, no other."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={"required": list(domain.RoutingPolicy.model_fields)},
    )

    @model_validator(mode="before")
    @classmethod
    def _every_field_and_no_other(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # pydantic's own error: the body must be an object
        fields = list(domain.RoutingPolicy.model_fields)
        unknown = [repr(str(k)[:40]) for k in data if k not in fields]
        missing = [f for f in fields if f not in data]
        if unknown or missing:
            problems = ([f"unknown {', '.join(unknown)}"] if unknown else []) + (
                [f"missing {', '.join(missing)}"] if missing else []
            )
            raise ValueError(
                f"PUT replaces the whole routing policy ({'; '.join(problems)}); send every "
                f"one of {', '.join(fields)} and no other field (GET /api/v1/routing gives "
                "the current values to change)"
            )
        return data


def item_json(item: ItemView, who: Principal) -> dict[str, Any]:
    """An item as the API returns it (the lease token only to its holder)."""
    held = item.lease_owner == who.name
    return {
        "id": item.id,
        "state": item.state,
        "reasons": item.reasons,
        "priority": item.priority,
        "required_reviews": item.required_reviews,
        "reviews_done": item.reviews_done,
        "lease": ({"token": item.lease_token, "expires_at": item.lease_expires} if held else None),
        "feedback": item.feedback,
        "event": item.event.model_dump(mode="json"),
    }


def api_router(ctx: Ctx) -> APIRouter:
    """Routes of the review API under /api/v1."""
    router = APIRouter(prefix="/api/v1")
    _review_api(router, ctx)
    _routing_api(router, ctx)
    return router


def _review_api(router: APIRouter, ctx: Ctx) -> None:
    """Claim an item, read it, review it, renew its lease."""
    Caller = Annotated[Principal, Depends(ctx.api_dep())]

    @router.post("/claims", response_model=None)
    def claim(who: Caller) -> dict[str, Any] | Response:
        got = ctx.store.claim(who.tenant, who.name)
        if got is None:
            return Response(status_code=204)
        item = ctx.store.item(who.tenant, got.item_id)
        assert item is not None
        return {
            "item": item_json(item, who),
            "lease_token": got.token,
            "expires_at": got.expires_at,
        }

    @router.get("/items/{item_id}")
    def get_item(item_id: RowId, who: Caller) -> dict[str, Any]:
        item = ctx.store.item(who.tenant, item_id)
        if item is None:
            raise ApiError(404, f"no item {item_id}", code="not_found")
        return item_json(item, who)

    @router.post("/items/{item_id}/reviews")
    def submit(item_id: RowId, body: ReviewIn, who: Caller) -> dict[str, Any]:
        try:
            done = ctx.store.submit(
                who.tenant,
                item_id,
                who.name,
                body.lease_token,
                body.action,
                answer=body.answer,
                reason=body.reason,
                oracle_chunk_ids=body.oracle_chunk_ids,
            )
        except QueueError as exc:
            raise ApiError(exc.status, str(exc), code=type(exc).__name__.lower()) from exc
        ctx.relay.wake()
        if not done.duplicate:
            ctx.ops.c_reviews.labels(done.action).inc()
        return {
            "review_id": done.review_id,
            "item_id": done.item_id,
            "action": done.action,
            "duplicate": done.duplicate,
        }

    @router.post("/items/{item_id}/lease")
    def renew(item_id: RowId, body: LeaseIn, who: Caller) -> dict[str, Any]:
        expires = ctx.store.renew(who.tenant, item_id, who.name, body.lease_token)
        if expires is None:
            raise ApiError(
                409, "the lease is gone (expired or not yours); claim again", code="leaselost"
            )
        return {"item_id": item_id, "expires_at": expires}


def _routing_api(router: APIRouter, ctx: Ctx) -> None:
    """The tenant's routing policy (replaced by admins) and its queue depth."""
    Caller = Annotated[Principal, Depends(ctx.api_dep())]
    Admin = Annotated[Principal, Depends(ctx.api_admin_dep())]

    @router.get("/routing")
    def get_routing(who: Caller) -> dict[str, Any]:
        with ctx.engine.connect() as conn:
            return policies.load_policy(conn, who.tenant).model_dump()

    @router.put("/routing")
    def put_routing(body: RoutingPolicyIn, who: Admin) -> dict[str, Any]:
        """Replace the tenant's routing policy (admin role).

        PUT replaces the whole policy: the body names every field of `GET /api/v1/routing`
        and no other (400 otherwise, naming what is missing or unknown), so a partial or
        mistyped body never resets the thresholds it left out to their defaults. To change
        one threshold, GET the policy, change it and PUT it back.
        """
        with ctx.engine.begin() as conn:
            policies.save_policy(conn, who.tenant, body, who.name, time.time())
        return body.model_dump()

    @router.get("/queue")
    def queue(who: Caller) -> dict[str, Any]:
        depth, age = ctx.store.depth(who.tenant).get(who.tenant, (0, 0.0))
        return {"tenant": who.tenant, "open": depth, "oldest_age_s": age}
