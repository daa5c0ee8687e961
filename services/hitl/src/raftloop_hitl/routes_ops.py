"""Ops pages: topics, consumer lag, dead letters, queue depth, serving adapter, training runs."""
# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

import asyncio
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from raftloop_hitl import policies
from raftloop_hitl.context import Ctx
from raftloop_hitl.web import Principal, render


def ops_router(ctx: Ctx) -> APIRouter:
    """The ops page and its JSON twin (admins only; runs and adapters of their tenant)."""
    router = APIRouter()
    Admin = Annotated[Principal, Depends(ctx.admin_dep())]

    async def figures(who: Principal) -> dict[str, Any]:
        snap = await ctx.ops.snapshot()
        data = asdict(snap)
        depth = await asyncio.to_thread(ctx.store.depth, who.tenant)
        data["queues"] = {who.tenant: depth.get(who.tenant, (0, 0.0))}
        # Runs and adapters are the admin's tenant's only; topics and lag are the platform's.
        data["serving"] = await asyncio.to_thread(policies.serving_adapter, ctx.engine, who.tenant)
        data["timeline"] = await asyncio.to_thread(policies.timeline, ctx.engine, who.tenant)
        data["outbox_published"] = ctx.relay.published
        return data

    @router.get("/ops", response_class=HTMLResponse)
    async def ops_page(request: Request, who: Admin) -> Response:
        return render(request, ctx.templates, "ops.html", {"user": who, "d": await figures(who)})

    @router.get("/ops.json")
    async def ops_json(who: Admin) -> dict[str, Any]:
        return await figures(who)

    return router
