"""The ops page of one tenant's admin shows that tenant's training runs and adapters only."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from raftloop_core import events as ev
from raftloop_core.api import KeyStore
from raftloop_core.messaging import make_broker
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import Topic
from raftloop_hitl.app import create_app
from raftloop_hitl.db import make_engine
from raftloop_hitl.main import session_secret
from raftloop_hitl.policies import timeline

from ..support import prefixed_topics, settings_for, sign_in

pytestmark = pytest.mark.integration

ACME, GLOBEX = "a" * 64, "b" * 64


def events() -> list[tuple[Topic, ev.Event]]:
    runs = [
        ev.TrainingRunFinished(
            tenant=tenant,
            run_id=f"run-{tenant}",
            base_model="smollm2-135m",
            dataset_version="d" * 64,
            status="succeeded",
            adapter_id=adapter,
            train_examples=40,
        )
        for tenant, adapter in (("acme", ACME), ("globex", GLOBEX))
    ]
    promotions = [
        ev.AdapterPromoted(
            tenant=tenant,
            adapter_id=adapter,
            base_model="smollm2-135m",
            run_id=f"run-{tenant}",
            revision=revision,
        )
        for tenant, adapter, revision in (("acme", ACME, 1), ("globex", GLOBEX, 2))
    ]
    rejected = ev.AdapterRejected(
        tenant="globex", adapter_id="c" * 64, base_model="smollm2-135m", reasons=["globex-only"]
    )
    return [
        *((Topic.TRAINING_RUN_FINISHED, r) for r in runs),
        *((Topic.ADAPTER_PROMOTED, p) for p in promotions),
        (Topic.ADAPTER_REJECTED, rejected),
    ]


async def test_each_tenants_admin_sees_its_own_runs_and_adapters(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    prefix = prefixed_topics(kafka_settings)
    settings = settings_for(tmp_path, kafka_settings, prefix, ops_cache_s=0)
    app = create_app(
        settings,
        engine=make_engine(settings.database_url()),
        broker=make_broker(settings.kafka),
        keys=KeyStore.for_runtime(settings.runtime, None),
        session_secret=session_secret(settings),
    )
    async with app.router.lifespan_context(app):
        ctx = app.state.ctx
        for tenant in ("acme", "globex"):
            ctx.accounts.create(f"{tenant}-admin", f"{tenant}-password-123", "admin", tenant)
        publisher = make_broker(kafka_settings)
        async with publisher:
            await publisher.start()
            for topic, event in events():
                await publisher.publish(event, topic=prefix + topic, key=ev.event_key(topic, event))
        deadline = time.monotonic() + 60
        while len(timeline(ctx.engine)) < len(events()):
            assert time.monotonic() < deadline, "the timeline did not fill in time"
            await asyncio.sleep(0.1)
        seen = {}
        transport = httpx.ASGITransport(app=app)
        for tenant in ("acme", "globex"):
            async with httpx.AsyncClient(transport=transport, base_url="http://hitl") as client:
                await sign_in(client, f"{tenant}-admin", f"{tenant}-password-123")
                seen[tenant] = (await client.get("/ops.json"), await client.get("/ops"))

    for tenant, own, other in (("acme", ACME, GLOBEX), ("globex", GLOBEX, ACME)):
        data, page = seen[tenant]
        assert data.status_code == 200, data.text
        body = data.json()
        assert body["serving"]["adapter_id"] == own
        assert {row["adapter_id"] for row in body["timeline"]} <= {own, "c" * 64}
        assert {row["kind"] for row in body["timeline"]} >= {"training", "promoted"}
        assert other not in data.text
        assert other[:12] not in page.text
        assert f"run-{'globex' if tenant == 'acme' else 'acme'}" not in data.text
    assert "globex-only" in seen["globex"][0].text
    assert "globex-only" not in seen["acme"][0].text
