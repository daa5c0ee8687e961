"""Telemetry of the whole platform: metrics after traffic, one interaction in every log, readiness.

The six services run as processes (`ops_support`) on SmolLM2 and a private broker. One chat
goes through the gateway (which asks rag for sources), ingest, the judge (which scores it through
the gateway) and hitl, where a reviewer approves it, so that the trainer receives the curated
example. The readiness test runs last: it stops the broker and starts it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer

from .ops_support import (
    OpsPlatform,
    Service,
    lines_about,
    samples,
    start_platform,
    total,
    wait_until,
)

pytestmark = pytest.mark.integration

QUESTION = "How long do refunds take?"
DOCUMENT = b"# Refunds\n\nRefunds take five business days after we receive the item.\n"
BROKER_METRICS = (
    "faststream_received_messages",
    "faststream_received_processed_messages",
    "faststream_received_processed_messages_exceptions",
    "faststream_published_messages",
    "raftloop_dead_letters",
    "raftloop_subscriber_lag",
)
"""Families every service's broker exports (counters are named without `_total`)."""


@dataclass(frozen=True)
class Traffic:
    """What the module's traffic left behind."""

    interaction_id: str
    review: dict[str, Any]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsPlatform]:
    running = start_platform(tmp_path_factory.mktemp("ops"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def traffic(platform: OpsPlatform) -> Traffic:
    """A document, one chat followed down to the trainer, and one malformed chat event."""
    uploaded = httpx.post(
        f"{platform['ingest'].url}/v1/documents",
        files=[("files", ("refunds.md", DOCUMENT, "text/markdown"))],
        headers=platform.auth("internal"),
        timeout=30,
    )
    assert uploaded.status_code == 200, uploaded.text
    _review_everything_once(platform)
    wait_until(
        lambda: total(platform["rag"].metrics(), "raftloop_rag_documents_total") >= 1,
        timeout_s=120,
        what="rag to index the document",
        detail=platform["rag"].tail,
    )
    gateway = platform["gateway"]
    [model] = [m["id"] for m in gateway.get("/v1/models", headers=platform.auth("client")).json()
               ["data"] if m.get("kind") == "alias"]  # fmt: skip
    answered = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": QUESTION}]},
        headers=platform.auth("client"),
        timeout=120,
    )
    assert answered.status_code == 200, answered.text
    interaction_id = answered.headers["x-raftloop-interaction-id"]

    producer = KafkaProducer(bootstrap_servers=platform.broker.bootstrap_servers)
    producer.send("chat.completed.v1", b"{not json", key=b"broken").get(timeout=30)
    producer.close()

    hitl = platform["hitl"]
    wait_until(
        lambda: bool(lines_about(hitl, interaction_id)),
        timeout_s=300,
        what="the interaction to reach hitl (ingest -> judge -> hitl)",
        detail=lambda: platform["judge"].tail() + "\n" + hitl.tail(),
    )
    review = _approve(platform, interaction_id)
    wait_until(
        lambda: bool(lines_about(platform["trainer"], interaction_id)),
        timeout_s=120,
        what="the curated example to reach the trainer",
        detail=platform["trainer"].tail,
    )
    return Traffic(interaction_id, review)


def _review_everything_once(platform: OpsPlatform) -> None:
    """Route every interaction to one reviewer.

    By default hitl lets confident judgements pass unreviewed and sends a random 10% of items
    to two reviewers; either would leave this test's one approval without a curated example.
    """
    url = f"{platform['hitl'].url}/api/v1/routing"
    old = httpx.get(url, headers=platform.auth("admin"), timeout=30).raise_for_status().json()
    new = old | {"review_below": 1.0, "overlap_rate": 0.0, "auto_accept": False}
    httpx.put(url, json=new, headers=platform.auth("admin"), timeout=30).raise_for_status()


def _approve(platform: OpsPlatform, interaction_id: str) -> dict[str, Any]:
    """Claim the interaction's review item and approve it."""
    hitl = platform["hitl"].url
    headers = platform.auth("internal") | {"x-reviewer": "ops-test"}
    claimed = httpx.post(f"{hitl}/api/v1/claims", headers=headers, timeout=30)
    assert claimed.status_code == 200, claimed.text
    body = claimed.json()
    item = body["item"]
    assert item["event"]["interaction"]["interaction_id"] == interaction_id
    submitted = httpx.post(
        f"{hitl}/api/v1/items/{item['id']}/reviews",
        json={"action": "approved", "lease_token": body["lease_token"]},
        headers=headers,
        timeout=30,
    )
    assert submitted.status_code == 200, submitted.text
    return dict(submitted.json())


def test_one_interaction_can_be_followed_through_every_services_logs(
    platform: OpsPlatform, traffic: Traffic
) -> None:
    found = {
        name: lines_about(service, traffic.interaction_id)
        for name, service in platform.services.items()
    }
    assert all(found.values()), {name: len(lines) for name, lines in found.items()}
    messages = {name: {r["msg"] for r in lines} for name, lines in found.items()}
    assert "chat completed" in messages["gateway"]
    assert "retrieved" in messages["rag"]
    assert "interaction ingested" in messages["ingest"]
    assert "interaction judged" in messages["judge"]
    assert "judged interaction routed" in messages["hitl"]
    assert "curated example received" in messages["trainer"]
    for name, lines in found.items():
        assert {r["service"] for r in lines} == {name}
        assert all(r["ts"] and r["level"] for r in lines)


@pytest.mark.usefixtures("traffic")
def test_every_services_metrics_parse_and_show_the_traffic(platform: OpsPlatform) -> None:
    metrics = {name: service.metrics() for name, service in platform.services.items()}
    for name, families in metrics.items():
        missing = {"raftloop_http_request_seconds", *BROKER_METRICS} - set(families)
        assert not missing, f"{name} lacks {missing}"
        assert total(families, "raftloop_http_request_seconds_count", service=name) > 0, name
        if name != "gateway":  # the gateway consumes only adapter switches, and none happened
            assert samples(families, "faststream_received_messages_total", app_name=name), name

    for name in ("ingest", "judge", "hitl", "rag", "trainer"):
        wait_until(
            lambda n=name: bool(  # type: ignore[misc]
                samples(platform[n].metrics(), "raftloop_subscriber_lag", service=n)
            ),
            timeout_s=60,
            what=f"{name} to report the lag of its assigned partitions",
        )

    gw = metrics["gateway"]
    assert total(gw, "raftloop_http_request_seconds_count", route="/v1/chat/completions") >= 1
    assert total(gw, "faststream_published_messages_total", destination="chat.completed.v1") >= 1
    [serving] = samples(gw, "raftloop_gateway_serving_adapter_info", role="serving")
    assert serving.value == 1
    assert serving.labels["adapter_id"] == "base"

    rag = metrics["rag"]
    assert total(rag, "raftloop_http_request_seconds_count", route="/v1/retrieve") >= 1
    assert total(rag, "faststream_received_messages_total", handler="kb.document.v1") >= 1

    ingest = metrics["ingest"]
    assert total(ingest, "faststream_received_messages_total", handler="chat.completed.v1") >= 2
    assert total(ingest, "raftloop_dead_letters_total", topic="chat.completed.v1") >= 1
    assert (
        total(ingest, "faststream_published_messages_total", destination="chat.completed.v1.dlt")
        >= 1
    )
    published = ("interaction.ingested.v1", "kb.document.v1")
    for topic in published:
        assert total(ingest, "faststream_published_messages_total", destination=topic) >= 1

    judge = metrics["judge"]
    assert total(judge, "faststream_received_messages_total", handler="interaction.ingested.v1")
    assert total(judge, "faststream_published_messages_total", destination="interaction.judged.v1")
    scored = total(judge, "raftloop_judge_judgements_total", outcome="scored")
    assert scored >= 1  # SmolLM2 through the gateway scores from logprobs (greedy: stable)
    assert "raftloop_judge_score" in judge
    assert total(judge, "raftloop_judge_score_count", criterion="overall") == scored
    buckets = samples(judge, "raftloop_judge_score_bucket", criterion="overall")
    assert not scored or {b.labels["le"] for b in buckets} >= {"1.0", "3.0", "5.0", "+Inf"}

    hitl = metrics["hitl"]
    assert total(hitl, "faststream_received_messages_total", handler="interaction.judged.v1")
    for name in ("raftloop_consumer_lag", "raftloop_topic_end_offset", "hitl_queue_depth"):
        assert name in hitl, name
    wait_until(
        lambda: bool(samples(platform["hitl"].metrics(), "raftloop_consumer_lag", group="judge")),
        timeout_s=60,
        what="hitl's ops collector to report the judge group's lag",
    )

    trainer = metrics["trainer"]
    curated = "dataset.example.curated.v1"
    assert total(trainer, "faststream_received_messages_total", handler=curated) >= 1
    assert total(trainer, "raftloop_trainer_examples_total") >= 1
    runs = {s.labels["status"] for s in samples(trainer, "raftloop_trainer_runs_total")}
    assert runs == {"succeeded", "failed"}
    decisions = samples(trainer, "raftloop_trainer_gate_decisions_total")
    assert {s.labels["decision"] for s in decisions} == {"promoted", "rejected"}


@pytest.mark.usefixtures("traffic")
def test_readiness_follows_the_broker(platform: OpsPlatform) -> None:
    # Runs last in this module: it takes the broker away and brings it back on the same port.
    services = platform.services
    for service in services.values():
        status, body = service.ready()
        assert status == 200, (service.name, body)
        assert body["checks"]["broker"] is True, service.name

    platform.broker.stop()
    for service in services.values():

        def broker_gone(s: Service = service) -> bool:
            return s.ready()[1].get("checks", {}).get("broker") is False

        wait_until(
            broker_gone,
            timeout_s=60,
            what=f"{service.name} to see the broker gone",
        )
    for name, service in services.items():
        status, body = service.ready()
        # The gateway keeps answering during a broker outage (captures go to its spool), so
        # the broker is reported but only a full spool makes it unready.
        assert status == (200 if name == "gateway" else 503), (name, body)
        assert body["ready"] is (name == "gateway"), (name, body)

    platform.broker.start()
    for service in services.values():

        def broker_back(s: Service = service) -> bool:
            return s.ready()[0] == 200 and s.ready()[1]["checks"]["broker"] is True

        wait_until(
            broker_back,
            timeout_s=120,
            what=f"{service.name} ready again",
            detail=service.tail,
        )
