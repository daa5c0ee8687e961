"""With RAFTLOOP_PROTECT_OPS, hitl's /metrics (queue depth per tenant) needs an operator's key."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from raftloop_core.api import ApiKey, KeyStore
from raftloop_core.credentials import hash_key
from raftloop_core.messaging import make_broker
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import ops_statuses
from raftloop_hitl.app import create_app
from raftloop_hitl.db import make_engine
from raftloop_hitl.main import session_secret

from ..support import prefixed_topics, settings_for

pytestmark = pytest.mark.integration


async def test_metrics_and_the_schema_need_an_operators_key_when_protected(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    settings = settings_for(tmp_path, kafka_settings, prefixed_topics(kafka_settings))
    settings = settings.model_copy(
        update={"runtime": settings.runtime.model_copy(update={"protect_ops": True})}
    )
    keys = KeyStore(
        [
            ApiKey(key_id="a", key_sha256=hash_key("acme-admin"), tenant="acme", role="admin"),
            ApiKey(key_id="m", key_sha256=hash_key("metrics-key"), role="metrics"),
        ]
    )
    app = create_app(
        settings,
        engine=make_engine(settings.database_url()),
        broker=make_broker(settings.kafka),
        keys=keys,
        session_secret=session_secret(settings),
    )
    who = {"acme-admin": "acme-admin", "metrics": "metrics-key"}
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://hitl") as http,
    ):
        got = await ops_statuses(http, who)
        queue = await http.get("/api/v1/queue", headers={"Authorization": "Bearer metrics-key"})
    assert queue.status_code == 403  # a metrics key reads metrics, never the review queue
    assert got["/metrics"] == {"none": 401, "acme-admin": 403, "metrics": 200}
    assert got["/openapi.json"] == {"none": 401, "acme-admin": 200, "metrics": 200}
    assert set(got["/healthz"].values()) == {200}
