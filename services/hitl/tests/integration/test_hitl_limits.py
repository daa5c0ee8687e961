"""hitl's doors (issue #18) on the real service process (uvicorn) and PostgreSQL.

Body and header limits, unencodable text, a user update with nothing to change (it used to be a
500) and a routing PUT that used to reset every threshold it left out to its default.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import assert_doors_held, knock_on_doors
from raftloop_hitl.domain import RoutingPolicy

from ..support import Service, prefixed_topics, settings_for, sign_in

pytestmark = pytest.mark.integration


@dataclass
class Running:
    service: Service
    keys: dict[str, str]
    passwords: dict[str, str]
    engine: Engine

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@pytest.fixture
async def hitl(
    tmp_path: Path,
    kafka_settings: KafkaSettings,
    pg_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Running]:
    monkeypatch.setenv("DATABASE_URL", pg_engine.url.render_as_string(hide_password=False))
    settings = settings_for(tmp_path, kafka_settings, prefixed_topics(kafka_settings))
    service = Service(settings, tmp_path / "hitl.log")
    await asyncio.to_thread(service.start)
    creds = ensure_dev_credentials(settings.runtime)
    try:
        yield Running(
            service, creds.api_keys, {a.username: a.password for a in creds.accounts}, pg_engine
        )
    finally:
        service.stop()


async def test_the_review_api_refuses_what_breaks_a_limit_and_stays_up(hitl: Running) -> None:
    defaults = hitl.service.settings
    review = {"action": "corrected", "lease_token": "x", "answer": "Five days."}
    async with httpx.AsyncClient(base_url=hitl.service.url, timeout=30) as http:
        answers = await knock_on_doors(
            http,
            "/api/v1/items/1/reviews",
            body=review,
            text_field="answer",
            max_body_bytes=defaults.max_request_bytes,
            max_header_bytes=defaults.max_header_bytes,
            headers=hitl.auth("internal"),
        )
        queue = await http.get("/api/v1/queue", headers=hitl.auth("internal"))
    assert_doors_held(answers, prefix="HITL_", param="answer")
    assert queue.status_code == 200


async def test_routing_put_takes_the_whole_policy_and_nothing_else(hitl: Running) -> None:
    admin = hitl.auth("admin")
    async with httpx.AsyncClient(base_url=hitl.service.url, timeout=30) as http:
        custom = (await http.get("/api/v1/routing", headers=admin)).json() | {
            "review_below": 0.6,
            "audit_rate": 0.25,
        }
        saved = await http.put("/api/v1/routing", json=custom, headers=admin)
        empty = await http.put("/api/v1/routing", json={}, headers=admin)
        partial = await http.put("/api/v1/routing", json={"audit_rate": 1.0}, headers=admin)
        unknown = await http.put(
            "/api/v1/routing", json=custom | {"review_belwo": 0.1}, headers=admin
        )
        reviewer = await http.put("/api/v1/routing", json={}, headers=hitl.auth("internal"))
        kept = (await http.get("/api/v1/routing", headers=admin)).json()
        healthy = (await http.get("/healthz")).status_code, (await http.get("/readyz")).status_code

    assert saved.status_code == 200, saved.text
    fields = list(RoutingPolicy.model_fields)
    for refused in (empty, partial, unknown):
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert "PUT replaces the whole routing policy" in error["message"]
        assert ", ".join(fields) in error["message"]  # says which fields it takes
    assert "missing review_below" in empty.json()["error"]["message"]
    others = ", ".join(f for f in fields if f != "audit_rate")
    assert f"(missing {others})" in partial.json()["error"]["message"]
    assert "unknown 'review_belwo'" in unknown.json()["error"]["message"]
    assert reviewer.status_code == 403  # the role is checked before the body
    assert kept == custom  # nothing was reset to its default
    assert healthy == (200, 200)


async def test_a_user_update_with_nothing_to_change_is_a_400(hitl: Running) -> None:
    with hitl.engine.connect() as conn:
        reviewer_id = conn.execute(
            text("SELECT id FROM users WHERE username = 'reviewer'")
        ).scalar_one()
        before = conn.execute(text("SELECT * FROM users WHERE id = :i"), {"i": reviewer_id}).one()
    async with httpx.AsyncClient(base_url=hitl.service.url, timeout=30) as http:
        csrf = await sign_in(http, "admin", hitl.passwords["admin"])
        nothing = await http.post(f"/admin/users/{reviewer_id}", data={"csrf_token": csrf})
        blanks = await http.post(
            f"/admin/users/{reviewer_id}", data={"csrf_token": csrf, "role": "", "password": ""}
        )
        changed = await http.post(
            f"/admin/users/{reviewer_id}", data={"csrf_token": csrf, "role": "admin"}
        )
        healthy = (await http.get("/healthz")).status_code, (await http.get("/readyz")).status_code
    with hitl.engine.connect() as conn:
        role = conn.execute(
            text("SELECT role FROM users WHERE id = :i"), {"i": reviewer_id}
        ).scalar_one()

    for refused in (nothing, blanks):
        assert refused.status_code == 400, refused.text[:500]
        assert "nothing to change" in refused.text
        for field in ("role", "active", "password"):
            assert field in refused.text
    assert before.role == "reviewer"
    assert changed.status_code == 303
    assert role == "admin"
    assert healthy == (200, 200)
    assert "Traceback" not in hitl.service.log_path.read_text()
