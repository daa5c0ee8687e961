"""Who is calling (session or API key), CSRF tokens, and HTML/JSON error pages."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from raftloop_core.api import ApiError, KeyStore, error_response, presented_key
from raftloop_hitl.accounts import Accounts

HERE = Path(__file__).parent
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
REVIEWER_HEADER = "x-reviewer"


@dataclass(frozen=True)
class Principal:
    """A caller: a signed-in user, or an API key acting for a named (simulated) reviewer."""

    name: str
    role: str
    tenant: str
    via: str

    @property
    def admin(self) -> bool:
        """Whether admin pages are open to this caller."""
        return self.role == "admin"


class PageError(Exception):
    """An error shown as an HTML page (or the JSON envelope under /api)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def make_templates() -> Jinja2Templates:
    """Templates with autoescaping on for every file: model output is always shown as text."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["ts"] = lambda t: datetime.fromtimestamp(float(t), UTC).strftime(
        "%Y-%m-%d %H:%M:%S"
    )
    return Jinja2Templates(env=env)


def csrf_token(request: Request) -> str:
    """The session's CSRF token (created on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, presented: str | None) -> None:
    """Refuse a state change whose CSRF token does not match the session's."""
    expected = request.session.get("csrf")
    if (
        not isinstance(expected, str)
        or not presented
        or not hmac.compare_digest(expected.encode(), presented.encode())
    ):
        raise PageError(403, "missing or wrong CSRF token; reload the page and try again")


async def require_csrf(request: Request) -> None:
    """Dependency of the pages' form posts: a session (but to sign in) and its CSRF token."""
    if "uid" not in request.session and request.url.path != "/login":
        raise PageError(401, "please sign in")
    form = await request.form()
    value = form.get(CSRF_FIELD)
    check_csrf(request, value if isinstance(value, str) else None)


def session_principal(request: Request, accounts: Accounts) -> Principal | None:
    """The signed-in user of this request, if any."""
    user_id = request.session.get("uid")
    if not isinstance(user_id, int):
        return None
    account = accounts.get(user_id)
    if account is None or request.session.get("uname") != account.username:
        return None
    if request.session.get("epoch", 0) != account.epoch:
        return None  # password or role changed since this session began
    return Principal(account.username, account.role, account.tenant, "session")


def key_principal(request: Request, keys: KeyStore) -> Principal | None:
    """The caller of an API key: internal keys act as reviewers, admin keys as admins.

    Raises:
        ApiError: an invalid key, or a client key (401/403).
    """
    key = presented_key(request)
    if key is None:
        return None
    caller = keys.lookup(key)
    if caller is None:
        raise ApiError(401, "invalid API key", code="invalid_api_key")
    if caller.role not in ("internal", "admin"):  # client and metrics keys
        raise ApiError(403, "the review API needs an internal or admin key", code="forbidden")
    name = request.headers.get(REVIEWER_HEADER) or caller.key_id
    if len(name) > 100:
        raise ApiError(400, f"{REVIEWER_HEADER} is longer than 100 characters")
    role = "admin" if caller.role == "admin" else "reviewer"
    return Principal(f"{caller.key_id}/{name}", role, caller.tenant, "key")


def render(
    request: Request,
    templates: Jinja2Templates,
    name: str,
    context: dict[str, Any],
    *,
    status: int = 200,
) -> HTMLResponse:
    """Render a page with the common context (user, CSRF token)."""
    base = {"user": None, "csrf": csrf_token(request), "flash": request.query_params.get("m")}
    return templates.TemplateResponse(request, name, base | context, status_code=status)


def page_error_handler(templates: Jinja2Templates) -> Any:
    """Exception handler: the JSON envelope under /api, an HTML page elsewhere."""

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        if request.url.path.startswith("/api/"):
            return error_response(ApiError(exc.status, exc.message))
        if exc.status == 401:
            return render(request, templates, "login.html", {"error": exc.message}, status=401)
        return render(
            request,
            templates,
            "error.html",
            {"status": exc.status, "message": exc.message},
            status=exc.status,
        )

    return handle


def security_headers(response: Response) -> None:
    """Headers that keep pages from being framed or running foreign scripts."""
    response.headers.setdefault(
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; "
        "form-action 'self'",
    )
    response.headers.setdefault("x-frame-options", "DENY")
    response.headers.setdefault("x-content-type-options", "nosniff")
    response.headers.setdefault("referrer-policy", "same-origin")
