"""Kill -9 of the service while reviews are submitted: nothing lost, nothing published twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import Topic

from ..conftest import judged
from ..support import Service, prefixed_topics, publish_judged, read_topic, settings_for

pytestmark = pytest.mark.integration

ITEMS, REVIEWERS = 90, 6


async def wait_open(client: httpx.AsyncClient, count: int, timeout_s: float = 60) -> None:
    for _ in range(int(timeout_s / 0.2)):
        got = await client.get("/api/v1/queue")
        if got.status_code == 200 and got.json()["open"] == count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"queue never reached {count} open items")


async def test_kill9_during_reviews_loses_and_duplicates_nothing(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    prefix = prefixed_topics(kafka_settings)
    settings = settings_for(tmp_path, kafka_settings, prefix, lease_seconds=120)
    service = Service(settings, tmp_path / "hitl.log")
    await asyncio.to_thread(service.start)
    key = ensure_dev_credentials(settings.runtime).api_keys["internal"]
    events = [judged(p=0.3) for _ in range(ITEMS)]
    await publish_judged(kafka_settings, prefix, events)
    acked: dict[str, str] = {}
    restarted, enough = asyncio.Event(), asyncio.Event()
    try:
        async with httpx.AsyncClient(
            base_url=service.url, headers={"authorization": f"Bearer {key}"}, timeout=10
        ) as probe:
            await wait_open(probe, ITEMS)

        async def call(client: httpx.AsyncClient, path: str, **kw: object) -> httpx.Response:
            while True:  # a dead or restarting service: retry the same request
                try:
                    return await client.post(path, **kw)  # type: ignore[arg-type]
                except httpx.TransportError:
                    await asyncio.sleep(0.2)

        async def reviewer(name: str) -> None:
            headers = {"authorization": f"Bearer {key}", "x-reviewer": name}
            async with httpx.AsyncClient(base_url=service.url, headers=headers, timeout=10) as c:
                while True:
                    got = await call(c, "/api/v1/claims")
                    if got.status_code == 204:
                        depth = (await c.get("/api/v1/queue")).json()["open"]
                        if depth == 0:
                            return
                        await asyncio.sleep(0.2)
                        continue
                    assert got.status_code == 200, got.text
                    body = {"action": "approved", "lease_token": got.json()["lease_token"]}
                    item = got.json()["item"]["id"]
                    done = await call(c, f"/api/v1/items/{item}/reviews", json=body)
                    assert done.status_code == 200, done.text
                    acked[done.json()["review_id"]] = name
                    if len(acked) >= ITEMS // 3:
                        enough.set()

        async def killer() -> None:
            await enough.wait()
            await asyncio.to_thread(service.kill9)
            await asyncio.to_thread(service.start)
            restarted.set()

        await asyncio.gather(killer(), *(reviewer(f"sim{i}") for i in range(REVIEWERS)))
        assert restarted.is_set()
        total = len(acked)
        assert total >= ITEMS
        reviews = await asyncio.to_thread(
            read_topic, kafka_settings, prefix + Topic.REVIEW_COMPLETED, expect=total
        )
        decoded = [json.loads(value) for _, value in reviews]
        assert len({d["event_id"] for d in decoded}) == len(decoded), "a review was published twice"
        assert sorted(d["review_id"] for d in decoded) == sorted(acked), "reviews lost or extra"
        examples = await asyncio.to_thread(
            read_topic, kafka_settings, prefix + Topic.EXAMPLE_CURATED, expect=ITEMS
        )
        ids = [json.loads(value)["interaction_id"] for _, value in examples]
        event_ids = [json.loads(value)["event_id"] for _, value in examples]
        assert len(event_ids) == len(set(event_ids)), "an example was published twice"
        assert len(ids) == len(set(ids)) == ITEMS
        assert set(ids) == {str(e.interaction.interaction_id) for e in events}
    finally:
        await asyncio.to_thread(service.stop)
