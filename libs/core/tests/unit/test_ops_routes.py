"""Readiness checks, the metrics route and log context, without a broker."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from raftloop_core.logs import JsonFormatter, bind, bound
from raftloop_core.service import ReadinessCheck, add_ops_routes, blocking_check


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
