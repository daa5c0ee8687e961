"""Readiness checks, the metrics route and log context, without a broker."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from raftloop_core.api import ApiKey, KeyStore, install_error_handlers
from raftloop_core.credentials import hash_key
from raftloop_core.logs import JsonFormatter, bind, bound
from raftloop_core.service import ReadinessCheck, add_ops_routes, blocking_check
from raftloop_core.settings import Mode, RuntimeSettings


def _app(*checks: ReadinessCheck) -> FastAPI:
    app = FastAPI()
    add_ops_routes(app, service="svc", registry=CollectorRegistry(), checks=checks)

    @app.get("/work")
    async def work() -> dict[str, str]:
        return {"ok": "yes"}

    return app


async def _get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return await client.get(path)


async def _true() -> bool:
    return True


async def _false() -> bool:
    return False


def _broken() -> None:
    raise ConnectionError("database down")


async def test_ready_only_when_every_required_check_passes() -> None:
    ok = await _get(
        _app(ReadinessCheck("broker", _true), blocking_check("db", lambda: 1)), "/readyz"
    )
    assert ok.status_code == 200
    assert ok.json() == {"ready": True, "checks": {"broker": True, "db": True}}

    down = await _get(
        _app(ReadinessCheck("broker", _true), blocking_check("db", _broken)), "/readyz"
    )
    assert down.status_code == 503
    assert down.json() == {"ready": False, "checks": {"broker": True, "db": False}}


async def test_an_informational_check_is_shown_but_does_not_gate() -> None:
    app = _app(ReadinessCheck("model", _true), ReadinessCheck("broker", _false, required=False))
    response = await _get(app, "/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"model": True, "broker": False}


async def test_metrics_parse_and_time_requests_by_route() -> None:
    app = _app()
    assert (await _get(app, "/work")).status_code == 200
    text = (await _get(app, "/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counts = [
        s
        for s in families["raftloop_http_request_seconds"].samples
        if s.name.endswith("_count") and s.labels["route"] == "/work"
    ]
    assert [(s.labels["service"], s.labels["status"], s.value) for s in counts] == [
        ("svc", "200", 1.0)
    ]


def _line(logger: logging.Logger, message: str, **extra: object) -> dict[str, object]:
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return dict(json.loads(JsonFormatter("svc").format(record)))


async def test_bound_ids_reach_every_line_in_the_block_and_its_tasks() -> None:
    logger = logging.getLogger("raftloop.test")
    with bind(interaction_id="abc", tenant=None):
        assert bound("interaction_id") == "abc"
        assert _line(logger, "inside")["interaction_id"] == "abc"
        with bind(run_id="r1"):
            nested = _line(logger, "nested")
        in_task = await asyncio.create_task(asyncio.to_thread(_line, logger, "task"))
        explicit = _line(logger, "explicit", interaction_id="other")
    outside = _line(logger, "outside")
    assert (nested["interaction_id"], nested["run_id"]) == ("abc", "r1")
    assert "tenant" not in nested
    assert in_task["interaction_id"] == "abc"
    assert explicit["interaction_id"] == "other"
    assert "interaction_id" not in outside
    assert bound("interaction_id") is None


OPS_KEYS = {
    "client": ("acme", "client", ()),
    "tenant-admin": ("acme", "admin", ()),
    "tenant-internal": ("acme", "internal", ()),
    "platform": ("default", "internal", ("*",)),
    "metrics": ("default", "metrics", ()),
}


def _guarded_app(*, protect: bool) -> FastAPI:
    keys = KeyStore(
        ApiKey(key_id=name, key_sha256=hash_key(name), tenant=t, role=role, tenants=listed)
        for name, (t, role, listed) in OPS_KEYS.items()
    )
    app = FastAPI()
    install_error_handlers(app)
    add_ops_routes(app, service="svc", registry=CollectorRegistry(), keys=keys, protect=protect)
    return app


async def _status(app: FastAPI, path: str, who: str | None) -> int:
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {who}"} if who else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return (await client.get(path, headers=headers)).status_code


@pytest.mark.parametrize(
    ("who", "metrics", "docs"),
    [
        (None, 401, 401),
        ("nope", 401, 401),
        ("client", 403, 403),
        # A tenant's own keys read the API docs but not /metrics, which names every tenant.
        ("tenant-admin", 403, 200),
        ("tenant-internal", 403, 200),
        ("platform", 200, 200),
        ("metrics", 200, 200),
    ],
)
async def test_protected_ops_routes_need_an_operators_key(
    who: str | None, metrics: int, docs: int
) -> None:
    app = _guarded_app(protect=True)
    assert await _status(app, "/metrics", who) == metrics
    for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        assert await _status(app, path, who) == docs, path
    for path in ("/healthz", "/readyz"):  # probes stay open
        assert await _status(app, path, who) == 200


async def test_unprotected_ops_routes_are_open() -> None:
    app = _guarded_app(protect=False)
    for path in ("/metrics", "/openapi.json", "/docs"):
        assert await _status(app, path, None) == 200


async def test_the_refusal_says_what_to_send() -> None:
    transport = httpx.ASGITransport(app=_guarded_app(protect=True))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        missing = (await client.get("/metrics")).json()["error"]
        refused = (await client.get("/metrics", headers={"x-api-key": "tenant-admin"})).json()[
            "error"
        ]
    assert missing["code"] == "missing_api_key"
    assert "RAFTLOOP_PROTECT_OPS" in missing["message"]
    assert refused["code"] == "forbidden"
    assert "metrics" in refused["message"]


def test_protection_defaults_on_in_production_only(tmp_path: Path) -> None:
    dev = RuntimeSettings(data_dir=tmp_path)
    prod = RuntimeSettings(data_dir=tmp_path, mode=Mode.PRODUCTION)
    assert (dev.ops_protected, prod.ops_protected) == (False, True)
    assert RuntimeSettings(data_dir=tmp_path, protect_ops=True).ops_protected
    assert not RuntimeSettings(
        data_dir=tmp_path, mode=Mode.PRODUCTION, protect_ops=False
    ).ops_protected
