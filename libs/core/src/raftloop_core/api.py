"""HTTP conventions shared by every service: the OpenAI error envelope and API-key callers.

Errors: `{"error": {"message", "type", "param", "code"}}` with the matching status, so the
official `openai` client raises its matching exception class. Domain code raises `ApiError`
subclasses (or plain domain errors mapped by the service), never `HTTPException`.

Callers: every route checks who is calling. A key (`Authorization: Bearer <key>` or
`x-api-key`) is looked up by its sha256 in the `KeyStore`; it carries a tenant and a role.

Tenants: a key acts for its own tenant, whatever a request body or query names. Only a key
whose record lists `tenants` (the platform's own services: the internal key that the gateway
and the trainer send to rag) may act for another tenant, and only for one it lists, or for any
with `["*"]`. Routes that take a tenant from the request resolve it with `Caller.acting_for`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from raftloop_core.credentials import ensure_dev_credentials, hash_key
from raftloop_core.events import DEFAULT_TENANT, TENANT_PATTERN, Tenant
from raftloop_core.settings import RuntimeSettings, SettingsError

log = logging.getLogger(__name__)

Role = Literal["client", "internal", "admin", "metrics"]
"""A `metrics` key only reads the ops routes (`/metrics`, the API docs) where they need a key."""

ALL_TENANTS = "*"
"""In a key record's `tenants`: the key may act for every tenant."""

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error with an HTTP status, rendered in the OpenAI envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


def error_body(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> dict[str, dict[str, str | None]]:
    """The OpenAI error envelope."""
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(exc: ApiError) -> JSONResponse:
    """Render an ApiError."""
    return JSONResponse(
        error_body(exc.status, exc.message, code=exc.code, param=exc.param),
        status_code=exc.status,
        headers=exc.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to the envelope: ApiError, validation (400), HTTP errors, crashes (500)."""

    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError | ValidationError) else []
        first = errors[0] if errors else {}
        # Only the first element names where the value came from; a field may be called `query`.
        where = list(first.get("loc", ()))
        if where and where[0] in ("body", "query", "path", "header", "cookie"):
            where = where[1:]
        loc = [str(p) for p in where]
        param = ".".join(loc) or None
        message = f"invalid request: {param + ': ' if param else ''}{first.get('msg', str(exc))}"
        return error_response(ApiError(400, message, param=param, code="invalid_request"))

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(
            ApiError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
        )

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:  # noqa: ARG001  # Starlette's handler signature
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_response(ApiError(500, "internal error; see the service log", code="internal"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


class ApiKey(BaseModel):
    """A stored API key: only its hash is kept."""

    model_config = ConfigDict(frozen=True)

    key_id: str
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tenant: Tenant = DEFAULT_TENANT
    role: Role
    tenants: tuple[str, ...] = Field(
        default=(),
        description=(
            'Other tenants this key may act for when a request names one; `["*"]` for all. '
            "Only for the platform's own internal (or admin) keys; empty: its own tenant only."
        ),
    )
    requests_per_minute: int = Field(default=600, ge=1)
    tokens_per_minute: int = Field(default=200_000, ge=1)

    @model_validator(mode="after")
    def _check_tenants(self) -> ApiKey:
        if not self.tenants:
            return self
        if self.role not in ("internal", "admin"):
            raise ValueError(
                f"key {self.key_id!r} has role {self.role} and lists `tenants`; only internal and "
                "admin keys of the platform's own services may act for several tenants"
            )
        if ALL_TENANTS in self.tenants and len(self.tenants) > 1:
            raise ValueError(f'key {self.key_id!r}: `tenants` is either ["*"] or a list of tenants')
        for tenant in self.tenants:
            if tenant != ALL_TENANTS and not re.match(TENANT_PATTERN, tenant):
                raise ValueError(f"key {self.key_id!r}: {tenant!r} in `tenants` is not a tenant")
        return self


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's id, tenant and role, and any other tenants it may act for."""

    key_id: str
    tenant: str
    role: Role
    requests_per_minute: int = 600
    tokens_per_minute: int = 200_000
    tenants: frozenset[str] = frozenset()

    @property
    def all_tenants(self) -> bool:
        """Whether this key may act for every tenant (`tenants: ["*"]`): an operator's key."""
        return ALL_TENANTS in self.tenants

    def may_act_for(self, tenant: str) -> bool:
        """Whether this key may act for `tenant`: its own, or one its record lists."""
        return tenant == self.tenant or self.all_tenants or tenant in self.tenants

    def acting_for(self, requested: str | None, *, param: str = "tenant") -> str:
        """The tenant a request runs in: `requested` when the key may act for it, else its own.

        Raises:
            ApiError: 403 when the request names a tenant this key may not act for.
        """
        if not requested:
            return self.tenant
        if self.may_act_for(requested):
            return requested
        raise ApiError(
            403,
            f"this key acts for tenant {self.tenant!r} only and may not name tenant "
            f"{requested!r}; omit `{param}` or use a key of tenant {requested!r} (a platform key "
            "may act for several tenants only if the keys file lists them in its `tenants`)",
            code="tenant_forbidden",
            param=param,
        )


class KeyStore:
    """API keys by hash. Loaded from a JSON file in production, from dev credentials otherwise."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._by_hash = {k.key_sha256: k for k in keys}

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, key: str) -> Caller | None:
        """The caller a presented key belongs to, or None."""
        found = self._by_hash.get(hash_key(key))
        if found is None:
            return None
        return Caller(
            found.key_id,
            found.tenant,
            found.role,
            found.requests_per_minute,
            found.tokens_per_minute,
            frozenset(found.tenants),
        )

    @classmethod
    def from_file(cls, path: Path) -> KeyStore:
        """Load `[{key_id, key_sha256, tenant, role, tenants?, ...}]` from a JSON file.

        Raises:
            SettingsError: the file is missing or malformed.
        """
        try:
            raw = json.loads(path.read_text())
            return cls(ApiKey.model_validate(item) for item in raw)
        except (OSError, ValueError) as exc:
            raise SettingsError(
                f"cannot load API keys from {path}: {exc}; it must be a JSON list of "
                "{key_id, key_sha256, tenant, role} objects (RAFTLOOP_API_KEYS_FILE)"
            ) from exc

    @classmethod
    def for_runtime(cls, runtime: RuntimeSettings, keys_file: Path | None) -> KeyStore:
        """The key store for this mode: the keys file if given, else dev credentials.

        Raises:
            SettingsError: production without a keys file.
        """
        if keys_file is not None:
            return cls.from_file(keys_file)
        if runtime.production:
            raise SettingsError(
                "production mode needs API keys: set RAFTLOOP_API_KEYS_FILE to a JSON list of "
                "hashed keys (see README, 'Production')"
            )
        creds = ensure_dev_credentials(runtime)
        # The internal key is the one the platform's services send each other (the gateway and
        # the trainer to rag, the judge to the gateway): it acts for every tenant.
        return cls(
            ApiKey(
                key_id=f"dev-{role}",
                key_sha256=hash_key(key),
                role=role,
                tenants=(ALL_TENANTS,) if role == "internal" else (),
            )
            for role, key in creds.api_keys.items()
        )


def presented_key(request: Request) -> str | None:
    """The key a request presents, from `Authorization: Bearer` or `x-api-key`."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def require(store: KeyStore, *roles: Role) -> Callable[[Request], Awaitable[Caller]]:
    """A FastAPI dependency that admits only callers with one of `roles` (admin always passes)."""
    allowed = set(roles) | {"admin"}

    async def dependency(request: Request) -> Caller:
        key = presented_key(request)
        if key is None:
            raise ApiError(
                401, "missing API key: send `Authorization: Bearer <key>`", code="missing_api_key"
            )
        caller = store.lookup(key)
        if caller is None:
            raise ApiError(401, "invalid API key", code="invalid_api_key")
        if caller.role not in allowed:
            raise ApiError(
                403,
                f"this route needs the {' or '.join(sorted(allowed))} role; "
                f"the key has role {caller.role}",
                code="forbidden",
            )
        return caller

    return dependency
