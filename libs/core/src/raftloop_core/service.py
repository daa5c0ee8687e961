"""What every service's HTTP app has: `/healthz`, `/readyz`, Prometheus `/metrics`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest


@dataclass(frozen=True)
class ReadinessCheck:
    """A named async check; the service is ready only when every check returns True."""

    name: str
    check: Callable[[], Awaitable[bool]]


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
        results: dict[str, bool] = {}
        for check in checks:
            try:
                results[check.name] = await check.check()
            except Exception:
                results[check.name] = False
        ready = all(results.values())
        return JSONResponse({"ready": ready, "checks": results}, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
