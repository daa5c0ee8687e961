"""What every service's HTTP app has: `/healthz`, `/readyz`, Prometheus `/metrics`.

`/readyz` answers 200 only when every required check passes (the service's broker, store and
model), else 503; its body names each check's result, informational ones included.

Protected ops routes (`RAFTLOOP_PROTECT_OPS`, on by default in production): `/metrics` names
every tenant (queue depths, labels), so it needs an operator's key, a `metrics` key (what
Prometheus sends) or a key that acts for every tenant; the API docs (`/docs`, `/redoc`,
`/openapi.json`) need any admin, internal or metrics key. `/healthz` and `/readyz` stay open
for probes and say nothing about tenants.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest

from raftloop_core.api import ApiError, Caller, KeyStore, error_response, presented_key

METRICS_PATH = "/metrics"


@dataclass(frozen=True)
class ReadinessCheck:
    """A named async check; the service is ready only when every required check returns True.

    A check with `required=False` is reported in `/readyz` but does not gate readiness.
    """

    name: str
    check: Callable[[], Awaitable[bool]]
    required: bool = True


def blocking_check(name: str, probe: Callable[[], object]) -> ReadinessCheck:
    """A check that runs a blocking `probe` (a database ping) in a worker thread.

    It passes when the probe returns without raising.
    """

    async def check() -> bool:
        await asyncio.to_thread(probe)
        return True

    return ReadinessCheck(name, check)


def broker_check(broker: KafkaBroker, *, timeout_s: float = 2.0) -> ReadinessCheck:
    """Ready when the broker answers a ping."""

    async def ping() -> bool:
        return bool(await broker.ping(timeout=timeout_s))

    return ReadinessCheck("broker", ping)


def add_ops_routes(
    app: FastAPI,
    *,
    service: str,
    registry: CollectorRegistry,
    checks: Sequence[ReadinessCheck] = (),
    keys: KeyStore | None = None,
    protect: bool = False,
) -> None:
    """Register health, readiness and metrics routes plus a request-latency histogram.

    With `protect` (the service's `runtime.ops_protected`), `/metrics` and the API docs need
    a key from `keys` (see the module docstring).

    Raises:
        ValueError: `protect` without `keys`.
    """
    if protect:
        if keys is None:
            raise ValueError("protected ops routes need the service's key store")
        _guard_ops_routes(app, keys)
    latency = Histogram(
        "raftloop_http_request_seconds",
        "HTTP request latency by route and status.",
        ["service", "method", "route", "status"],
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    )

    @app.middleware("http")
    async def _time_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        latency.labels(service, request.method, path, str(response.status_code)).observe(
            time.perf_counter() - start
        )
        return response

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        passed = await asyncio.gather(*(_passes(check) for check in checks))
        results = {check.name: ok for check, ok in zip(checks, passed, strict=True)}
        ready = all(ok for check, ok in zip(checks, passed, strict=True) if check.required)
        return JSONResponse({"ready": ready, "checks": results}, status_code=200 if ready else 503)

    @app.get(METRICS_PATH, include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def _passes(check: ReadinessCheck) -> bool:
    try:
        return bool(await check.check())
    except Exception:  # noqa: BLE001  # a failing dependency means "not ready", never a 500
        return False


def _guard_ops_routes(app: FastAPI, keys: KeyStore) -> None:
    """Refuse `/metrics` and the API docs to callers without a suitable key.

    A middleware rather than a dependency: FastAPI adds the docs routes itself.
    """
    docs = {app.docs_url, app.redoc_url, app.openapi_url}
    if app.docs_url and app.swagger_ui_oauth2_redirect_url:
        docs.add(app.swagger_ui_oauth2_redirect_url)
    guarded = {p for p in docs if p} | {METRICS_PATH}

    @app.middleware("http")
    async def _ops_key(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if path not in guarded:
            return await call_next(request)
        try:
            _admit(path, keys, presented_key(request))
        except ApiError as exc:
            return error_response(exc)
        return await call_next(request)


def _admit(path: str, keys: KeyStore, key: str | None) -> Caller:
    """The caller of a protected ops route, or the refusal."""
    if key is None:
        raise ApiError(
            401,
            f"{path} needs a key here (RAFTLOOP_PROTECT_OPS): send `Authorization: Bearer "
            "<key>` with a metrics key, or an admin or internal key",
            code="missing_api_key",
        )
    caller = keys.lookup(key)
    if caller is None:
        raise ApiError(401, "invalid API key", code="invalid_api_key")
    if path == METRICS_PATH:
        if caller.role == "metrics" or caller.all_tenants:
            return caller
        raise ApiError(
            403,
            "/metrics shows every tenant's figures: it needs a metrics key (role `metrics`, "
            "what Prometheus sends) or a platform key that acts for every tenant",
            code="forbidden",
        )
    if caller.role in ("metrics", "internal", "admin"):
        return caller
    raise ApiError(403, f"{path} needs an admin, internal or metrics key", code="forbidden")
