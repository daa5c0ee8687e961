"""What every router needs, passed in once by create_app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine

from raftloop_core.api import ApiError, KeyStore
from raftloop_hitl.accounts import Accounts
from raftloop_hitl.adapters import KafkaOpsMonitor, OutboxRelay
from raftloop_hitl.settings import HitlSettings
from raftloop_hitl.store import ReviewStore
from raftloop_hitl.throttle import SignInThrottle
from raftloop_hitl.web import (
    CSRF_HEADER,
    PageError,
    Principal,
    check_csrf,
    key_principal,
    session_principal,
)

# A row id in a URL: SQLite and PostgreSQL keep 64-bit integers, so a larger number is a 422,
# not an overflow inside the database driver (a 500 found by the reliability suite's fuzz).
RowId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A row id (1 .. 2^63-1).")]


@dataclass
class Ctx:
    """Shared services of the routers."""

    settings: HitlSettings
    engine: Engine
    store: ReviewStore
    accounts: Accounts
    keys: KeyStore
    templates: Jinja2Templates
    relay: OutboxRelay
    ops: KafkaOpsMonitor
    throttle: SignInThrottle

    def user_dep(self) -> Callable[[Request], Principal]:
        """Dependency: the signed-in user (401 otherwise)."""

        def dep(request: Request) -> Principal:
            who = session_principal(request, self.accounts)
            if who is None:
                raise PageError(401, "please sign in")
            return who

        return dep

    def admin_dep(self) -> Callable[[Request], Principal]:
        """Dependency: a signed-in admin (403 for reviewers)."""
        user = self.user_dep()

        def dep(request: Request) -> Principal:
            who = user(request)
            if not who.admin:
                raise PageError(403, "this page is for admins")
            return who

        return dep

    def api_dep(self) -> Callable[[Request], Principal]:
        """Dependency: an API key or a session (with the CSRF header on changes)."""

        def dep(request: Request) -> Principal:
            who = key_principal(request, self.keys)
            if who is not None:
                return who
            who = session_principal(request, self.accounts)
            if who is None:
                raise ApiError(
                    401, "sign in or send `Authorization: Bearer <key>`", code="missing_api_key"
                )
            if request.method not in ("GET", "HEAD"):
                check_csrf(request, request.headers.get(CSRF_HEADER))
            return who

        return dep

    def api_admin_dep(self) -> Callable[[Request], Principal]:
        """Dependency: an admin's API key or session (403 for reviewers), before the body."""
        caller = self.api_dep()

        def dep(request: Request) -> Principal:
            who = caller(request)
            if not who.admin:
                raise ApiError(403, "this route needs the admin role", code="forbidden")
            return who

        return dep


def as_dep(fn: Callable[[Request], Principal]) -> type[Principal]:
    """An Annotated dependency alias for a principal function."""
    return Annotated[Principal, Depends(fn)]  # type: ignore[return-value]
