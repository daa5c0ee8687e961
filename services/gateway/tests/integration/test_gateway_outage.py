"""Broker outage: every answered interaction reaches Kafka once the broker is back, in order."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import EventLog, Gateway, interaction_of, start_gateway, wait_until

from raftloop_core import testing as core_testing
from raftloop_core.embedded import EmbeddedBroker, free_port
from raftloop_core.topics import Topic

pytestmark = pytest.mark.integration
CONVERSATIONS = 4
REQUESTS = 20


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A broker only this module uses, so stopping it disturbs no other test."""
    log = tmp_path_factory.mktemp("outage-broker") / "tansu.log"
    broker = EmbeddedBroker(port=free_port(), log_path=log).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def outage_gateway(
    own_broker: EmbeddedBroker, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gw = start_gateway(
        tmp_path_factory.mktemp("outage-gateway"),
        model_dir=tiny_model_dir,
        bootstrap_servers=own_broker.bootstrap_servers,
        env={"GATEWAY_PUBLISH_TIMEOUT_MS": "2000"},
    )
    yield gw
    gw.stop()


async def test_events_survive_a_broker_outage(
    outage_gateway: Gateway, own_broker: EmbeddedBroker
) -> None:
    kafka = core_testing.test_kafka_settings(own_broker.bootstrap_servers)
    gw = outage_gateway
    client = gw.client()
    warm = client.chat.completions.create(
        model="raftloop", messages=[{"role": "user", "content": "warm"}], max_tokens=1
    )
    wait_until(
        lambda: gw.metrics().get("raftloop_gateway_capture_published", 0) >= 1,
        what="the gateway to reach the broker",
    )
    assert warm.id

    own_broker.stop()
    sent: list[tuple[str, int, str]] = []  # (conversation, turn, interaction id)
    for i in range(REQUESTS):
        conversation = f"outage-{i % CONVERSATIONS}"
        done = client.chat.completions.create(
            model="raftloop",
            messages=[{"role": "user", "content": f"question {i}"}],
            max_tokens=2,
            metadata={"conversation_id": conversation},
        )
        sent.append((conversation, i // CONVERSATIONS, interaction_of(done.id)))
    wait_until(
        lambda: gw.metrics()["raftloop_gateway_capture_spooled"] >= REQUESTS,
        what="the events to be spooled",
    )
    spool = gw.data_dir / "gateway" / "spool"
    assert any(spool.glob("*.jsonl"))

    # Same port; the in-memory broker comes back empty, and the gateway creates the topics
    # (with their partition counts) before it drains the spool.
    own_broker.start()
    wait_until(lambda: not any(spool.glob("*.jsonl")), timeout_s=90, what="the spool to drain")
    ids = {interaction for _, _, interaction in sent}
    async with EventLog(kafka, [str(Topic.CHAT_COMPLETED)], "outage-check") as log:
        await log.wait_for(
            lambda: ids <= {r.value["interaction_id"] for r in log.items},
            what=f"all spooled events after the broker returned\n{gw.log_tail()}",
        )
        await asyncio.sleep(1)  # a duplicate would show up by now
        received = [r for r in log.items if r.value["interaction_id"] in ids]

    event_ids = [r.value["event_id"] for r in received]
    assert len(event_ids) == len(set(event_ids)) == REQUESTS  # all arrived, none twice
    turn_of = {interaction: (conv, turn) for conv, turn, interaction in sent}
    # Kafka orders within a partition; the spool drains in answer order, so per partition the
    # turns of each conversation must come in the order they were answered.
    by_partition: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for record in sorted(received, key=lambda r: (r.partition, r.offset)):
        by_partition[record.partition].append(turn_of[record.value["interaction_id"]])
    for turns in by_partition.values():
        for conversation in {c for c, _ in turns}:
            order = [t for c, t in turns if c == conversation]
            assert order == sorted(order)
    # Answer order across all partitions is also kept in occurred_at.
    for conversation in {c for c, _, _ in sent}:
        mine = [r for r in received if r.value["conversation_id"] == conversation]
        mine.sort(key=lambda r: r.value["occurred_at"])
        assert [turn_of[r.value["interaction_id"]][1] for r in mine] == list(range(5))


def test_admin_routes_survive_a_schema_fuzz(outage_gateway: Gateway) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.core.result import Err

    gw = outage_gateway
    schema = schemathesis.openapi.from_url(f"{gw.url}/openapi.json")
    failures: list[str] = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the gateway's OpenAPI document is invalid
        operation = result.ok()
        if not operation.path.startswith("/v1/admin"):
            continue

        @settings(
            max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case[Any]) -> None:
            response = case.call(base_url=gw.url, headers=gw.auth("admin"), timeout=60)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path}: {response.status_code} {case.body!r}")

        check()
    assert failures == []
    assert httpx.get(f"{gw.url}/readyz").status_code == 200
