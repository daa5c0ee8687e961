"""Reviewer pages: sign-in, queue, item, guidelines, stats."""
# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from raftloop_hitl import policies
from raftloop_hitl.context import Ctx, RowId
from raftloop_hitl.store import QueueError
from raftloop_hitl.web import PageError, Principal, render, require_csrf, session_principal

ACTIONS = {"approve": "approved", "correct": "corrected", "reject": "rejected", "skip": "skipped"}


Csrf = Depends(require_csrf)


def ui_router(ctx: Ctx) -> APIRouter:
    """Routes of the reviewer pages."""
    router = APIRouter()
    _sign_in_pages(router, ctx)
    _queue_pages(router, ctx)
    _item_pages(router, ctx)
    _info_pages(router, ctx)
    return router


def _sign_in_pages(router: APIRouter, ctx: Ctx) -> None:
    t = ctx.templates

    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> Response:
        return render(request, t, "login.html", {"error": None})

    @router.post("/login", dependencies=[Csrf])
    def login(
        request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()]
    ) -> Response:
        host = request.client.host if request.client else None
        wait = ctx.throttle.admit(host, username)
        if wait > 0:
            seconds = math.ceil(wait)
            message = f"too many failed sign-ins; try again in {seconds} seconds"
            page = render(request, t, "login.html", {"error": message}, status=429)
            page.headers["retry-after"] = str(seconds)
            return page
        account = ctx.accounts.authenticate(username, password)
        if account is None:
            return render(
                request, t, "login.html", {"error": "wrong username or password"}, status=401
            )
        ctx.throttle.succeeded(host, username)
        request.session.clear()
        request.session.update(
            {"uid": account.id, "uname": account.username, "epoch": account.epoch}
        )
        return RedirectResponse("/queue", status_code=303)

    @router.post("/logout", dependencies=[Csrf])
    def logout(request: Request) -> Response:
        who = session_principal(request, ctx.accounts)
        user_id = request.session.get("uid")
        if who is not None and isinstance(user_id, int):
            # Server-side: this cookie, and any copy of it, stops working (#17).
            ctx.accounts.end_sessions(who.tenant, user_id)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)


def _queue_pages(router: APIRouter, ctx: Ctx) -> None:
    user_dep = ctx.user_dep()
    User = Annotated[Principal, Depends(user_dep)]
    t = ctx.templates

    @router.get("/", dependencies=[Depends(user_dep)])
    def home() -> Response:
        return RedirectResponse("/queue", status_code=303)

    @router.get("/queue", response_class=HTMLResponse)
    def queue(request: Request, who: User) -> Response:
        items = ctx.store.queue(who.tenant)
        depth = ctx.store.depth(who.tenant).get(who.tenant, (0, 0.0))
        return render(request, t, "queue.html", {"user": who, "items": items, "depth": depth})

    @router.post("/queue/claim", dependencies=[Csrf])
    def claim_next(
        who: User,
        release_item: Annotated[int | None, Form()] = None,
        release_token: Annotated[str | None, Form()] = None,
    ) -> Response:
        if release_item is not None and release_token:
            ctx.store.release(who.tenant, release_item, who.name, release_token)
        # "Next" from an item page means another item, not the one just left.
        claim = ctx.store.claim(who.tenant, who.name, exclude=release_item)
        if claim is None:
            return RedirectResponse("/queue?m=queue+empty", status_code=303)
        return RedirectResponse(f"/items/{claim.item_id}", status_code=303)


def _item_pages(router: APIRouter, ctx: Ctx) -> None:
    User = Annotated[Principal, Depends(ctx.user_dep())]
    t = ctx.templates

    @router.get("/items/{item_id}", response_class=HTMLResponse)
    def item_page(request: Request, item_id: RowId, who: User) -> Response:
        item = ctx.store.item(who.tenant, item_id)
        if item is None:
            raise PageError(404, f"no item {item_id}")
        held = item.lease_owner == who.name and item.lease_token is not None
        return render(
            request,
            t,
            "item.html",
            {
                "user": who,
                "item": item,
                "held": held,
                "reviews": ctx.store.reviews_of(who.tenant, item_id),
                "guideline": policies.guidelines(ctx.engine, who.tenant)[0],
                "lease_seconds": ctx.settings.lease_seconds,
            },
        )

    @router.post("/items/{item_id}/review", dependencies=[Csrf])
    async def review(request: Request, item_id: RowId, who: User) -> Response:
        form = await request.form()
        action = ACTIONS.get(str(form.get("action", "")))
        if action is None:
            raise PageError(400, "action must be approve, correct, reject or skip")
        try:
            done = ctx.store.submit(
                who.tenant,
                item_id,
                who.name,
                str(form.get("lease_token", "")),
                action,  # type: ignore[arg-type]
                answer=str(form.get("answer", "")),
                reason=str(form.get("reason", "")),
                oracle_chunk_ids=[str(v) for v in form.getlist("oracle")],
            )
        except QueueError as exc:
            raise PageError(exc.status, str(exc)) from exc
        ctx.relay.wake()
        if not done.duplicate:
            ctx.ops.c_reviews.labels(action).inc()
        claim = ctx.store.claim(who.tenant, who.name)
        if claim is None:
            return RedirectResponse(f"/queue?m={action}%3B+queue+empty", status_code=303)
        return RedirectResponse(f"/items/{claim.item_id}?m={action}", status_code=303)


def _info_pages(router: APIRouter, ctx: Ctx) -> None:
    User = Annotated[Principal, Depends(ctx.user_dep())]
    t = ctx.templates

    @router.get("/guidelines", response_class=HTMLResponse)
    def guidelines(request: Request, who: User) -> Response:
        versions = policies.guidelines(ctx.engine, who.tenant)
        return render(request, t, "guidelines.html", {"user": who, "versions": versions})

    @router.get("/stats", response_class=HTMLResponse)
    def stats(request: Request, who: User) -> Response:
        rows = policies.reviewer_stats(ctx.engine, who.tenant)
        return render(request, t, "stats.html", {"user": who, "rows": rows})
