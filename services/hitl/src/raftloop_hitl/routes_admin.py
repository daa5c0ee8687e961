"""Admin pages: users and roles, routing thresholds, guidelines, agreement, audit log."""
# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from raftloop_hitl import domain, policies
from raftloop_hitl.accounts import AccountError
from raftloop_hitl.context import Ctx, RowId
from raftloop_hitl.web import PageError, Principal, render, require_csrf

Csrf = Depends(require_csrf)


def admin_router(ctx: Ctx) -> APIRouter:
    """Routes of the admin pages."""
    router = APIRouter(prefix="/admin")
    _user_pages(router, ctx)
    _policy_pages(router, ctx)
    return router


def _user_pages(router: APIRouter, ctx: Ctx) -> None:
    """Users and roles: list, create, update, sign out everywhere."""
    Admin = Annotated[Principal, Depends(ctx.admin_dep())]
    t = ctx.templates

    @router.get("/users", response_class=HTMLResponse)
    def users(request: Request, who: Admin) -> Response:
        rows = ctx.accounts.list(who.tenant)
        return render(request, t, "admin_users.html", {"user": who, "rows": rows, "error": None})

    @router.post("/users", dependencies=[Csrf])
    def create_user(
        request: Request,
        who: Admin,
        username: Annotated[str, Form()],
        password: Annotated[str, Form()],
        role: Annotated[str, Form()],
    ) -> Response:
        try:
            ctx.accounts.create(username, password, role, who.tenant, actor=who.name)
        except AccountError as exc:
            rows = ctx.accounts.list(who.tenant)
            return render(
                request,
                t,
                "admin_users.html",
                {"user": who, "rows": rows, "error": str(exc)},
                status=400,
            )
        return RedirectResponse("/admin/users?m=created", status_code=303)

    @router.post("/users/{user_id}", dependencies=[Csrf])
    def update_user(
        who: Admin,
        user_id: RowId,
        role: Annotated[str | None, Form()] = None,
        active: Annotated[str | None, Form()] = None,
        password: Annotated[str | None, Form()] = None,
    ) -> Response:
        try:
            found = ctx.accounts.update(
                who.tenant,
                user_id,
                actor=who.name,
                role=role or None,
                active=None if active is None else active == "on",
                password=password or None,
            )
        except AccountError as exc:
            raise PageError(400, str(exc)) from exc
        if not found:
            raise PageError(404, f"no user {user_id}")
        return RedirectResponse("/admin/users?m=saved", status_code=303)

    @router.post("/users/{user_id}/revoke-sessions", dependencies=[Csrf])
    def revoke_sessions(who: Admin, user_id: RowId) -> Response:
        if not ctx.accounts.end_sessions(who.tenant, user_id, actor=who.name):
            raise PageError(404, f"no user {user_id}")
        return RedirectResponse("/admin/users?m=signed+out+everywhere", status_code=303)


def _policy_pages(router: APIRouter, ctx: Ctx) -> None:
    """Routing thresholds, guidelines, agreement and the audit log."""
    Admin = Annotated[Principal, Depends(ctx.admin_dep())]
    t = ctx.templates

    @router.get("/routing", response_class=HTMLResponse)
    def routing(request: Request, who: Admin) -> Response:
        with ctx.engine.connect() as conn:
            policy = policies.load_policy(conn, who.tenant)
        return render(request, t, "admin_routing.html", {"user": who, "policy": policy})

    @router.post("/routing", dependencies=[Csrf])
    async def save_routing(request: Request, who: Admin) -> Response:
        form = await request.form()
        raw: dict[str, object] = {
            k: form.get(k) for k in domain.RoutingPolicy.model_fields if k in form
        }
        raw["auto_accept"] = form.get("auto_accept") == "on"
        try:
            policy = domain.RoutingPolicy.model_validate(raw)
        except ValidationError as exc:
            raise PageError(400, f"invalid thresholds: {exc.errors()[0]['msg']}") from exc
        with ctx.engine.begin() as conn:
            policies.save_policy(conn, who.tenant, policy, who.name, time.time())
        return RedirectResponse("/admin/routing?m=saved", status_code=303)

    @router.post("/guidelines", dependencies=[Csrf])
    def publish_guidelines(who: Admin, text: Annotated[str, Form()]) -> Response:
        if not text.strip():
            raise PageError(400, "guidelines cannot be empty")
        version = policies.add_guideline(ctx.engine, who.tenant, text, who.name, time.time())
        return RedirectResponse(f"/guidelines?m=published+v{version}", status_code=303)

    @router.get("/agreement", response_class=HTMLResponse)
    def agreement(request: Request, who: Admin) -> Response:
        figures = policies.agreement(ctx.engine, who.tenant)
        return render(request, t, "admin_agreement.html", {"user": who, "a": figures})

    @router.get("/audit", response_class=HTMLResponse)
    def audit(request: Request, who: Admin) -> Response:
        rows = policies.audit_log(ctx.engine, who.tenant)
        return render(request, t, "admin_audit.html", {"user": who, "rows": rows})
