"""What every service's HTTP app has: `/healthz`, `/readyz`, Prometheus `/metrics`.

`/readyz` answers 200 only when every required check passes (the service's broker, store and
model), else 503; its body names each check's result, informational ones included.
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
) -> None:
    """Register health, readiness and metrics routes plus a request-latency histogram."""
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

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def _passes(check: ReadinessCheck) -> bool:
    try:
        return bool(await check.check())
    except Exception:  # a failing dependency means "not ready", never a 500
        return False
