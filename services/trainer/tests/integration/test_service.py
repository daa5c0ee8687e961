"""The trainer service on the real broker: consume curated examples, run on demand (tiny model),
gate, publish, and switch the serving alias by hand through the admin API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from faststream.kafka import KafkaMessage

from raftloop_core.api import ApiKey, KeyStore
from raftloop_core.credentials import hash_key
from raftloop_core.events import event_key
from raftloop_core.messaging import consumer_options, ensure_topics, make_broker
from raftloop_core.settings import KafkaSettings, RuntimeSettings
from raftloop_core.testing import plan_examples
from raftloop_core.topics import Topic
from raftloop_trainer.adapters import KafkaEventSink
from raftloop_trainer.app import create_app
from raftloop_trainer.main import build_runner
from raftloop_trainer.settings import TrainerSettings
from raftloop_trainer.train import LoraParams

pytestmark = pytest.mark.integration

ADMIN, CLIENT = "admin-secret-key", "client-secret-key"


def keys_of(tenant: str) -> KeyStore:
    """An admin and a client key of `tenant`: an admin trains only its own tenant's data."""
    return KeyStore(
        [
            ApiKey(key_id="adm", key_sha256=hash_key(ADMIN), tenant=tenant, role="admin"),
            ApiKey(key_id="cli", key_sha256=hash_key(CLIENT), tenant=tenant, role="client"),
        ]
    )


GENERAL = [
    {"id": "capital", "question": "What is the capital of France?", "answer": "Paris."},
    {"id": "water", "question": "What is the chemical symbol for water?", "answer": "H2O."},
]
"""The tenant's own general questions: the gate's forgetting check (issue #19)."""

WATCHED = [
    Topic.TRAINING_RUN_FINISHED,
    Topic.ADAPTER_PROMOTED,
    Topic.ADAPTER_REJECTED,
    Topic.ADAPTER_ROLLED_BACK,
]


async def wait_for(predicate: Callable[[], Any], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def mine(
    seen: list[tuple[str, dict[str, Any]]], topic: Topic, field: str, value: str
) -> list[dict[str, Any]]:
    return [e for t, e in seen if t == topic and e.get(field) == value]


def check_report(report: Path) -> None:
    """The run's report: its three files, the tenant's own forgetting check, the judge's verdict."""
    assert report.is_file()
    assert (report.parent / "report.md").is_file()
    assert (report.parent / "report.png").is_file()
    payload = json.loads(report.read_text())
    assert payload["regression"] == {"items": 2, "stored": 2, "limit": 2}  # GENERAL, no more
    assert payload["sets"]["regression"][0]["n"] == 2
    # The pairwise judge (local, on the tiny model) ran: a win rate or the reason it has none.
    pairwise = payload["pairwise"]
    assert pairwise["judge"].startswith("local:")
    assert pairwise["measured"] or pairwise["reason"]
    # The error analysis: the base model serves, so two columns, over the hold-out only.
    errors = payload["error_analysis"]
    assert [c["label"] for c in errors["columns"]] == ["base = serving", "candidate"]
    assert errors["items"] == payload["sets"]["holdout"][0]["n"]
    assert "## error analysis" in (report.parent / "report.md").read_text()


@pytest.fixture
def settings(
    tmp_path: Path, kafka_settings: KafkaSettings, tiny_model_dir: Path
) -> TrainerSettings:
    return TrainerSettings(
        runtime=RuntimeSettings(data_dir=tmp_path / "var"),
        kafka=kafka_settings,
        base_model_path=tiny_model_dir,
        base_model_name="tiny-llama",
        auto_train=False,
        lora=LoraParams(max_steps=2, batch_size=2, warmup_steps=0, max_length=256),
        device="cpu",
        regression_items=2,
        eval_max_new_tokens=4,
        min_holdout_items=3,
    )


async def test_service_consumes_trains_gates_and_switches(
    settings: TrainerSettings, kafka_settings: KafkaSettings, unique: Callable[[str], str]
) -> None:
    ensure_topics(kafka_settings)
    tenant = unique("t").replace("-", "_")
    broker = make_broker(settings.kafka, client_id="trainer-test")
    runner = build_runner(settings, KafkaEventSink(broker))
    app = create_app(settings, keys=keys_of(tenant), runner=runner, broker=broker)
    seen: list[tuple[str, dict[str, Any]]] = []

    @broker.subscriber(*WATCHED, **consumer_options(kafka_settings, group_id=unique("watch")))  # type: ignore[untyped-decorator]
    async def watch(msg: KafkaMessage) -> None:
        record: Any = msg.raw_message  # one aiokafka ConsumerRecord: not a batch subscriber
        seen.append((record.topic, await msg.decode()))  # type: ignore[arg-type]

    batch = plan_examples(24, base_model="tiny-llama", tenant=tenant)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://trainer") as http,
    ):
        for event in [*batch, batch[0]]:  # the repeat is a redelivery: stored once
            await broker.publish(
                event, topic=Topic.EXAMPLE_CURATED, key=event_key(Topic.EXAMPLE_CURATED, event)
            )
        await wait_for(lambda: runner.store.count(tenant, "tiny-llama") == 24, 90)

        assert (await http.post("/v1/admin/train")).status_code == 401
        forbidden = await http.post(
            "/v1/admin/train", headers={"Authorization": f"Bearer {CLIENT}"}
        )
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["code"] == "forbidden"
        admin = {"Authorization": f"Bearer {ADMIN}"}
        general = await http.put("/v1/admin/regression", json={"items": GENERAL}, headers=admin)
        assert general.status_code == 200, general.text
        started = await http.post("/v1/admin/train", json={"tenant": tenant}, headers=admin)
        assert started.status_code == 202, started.text
        again = await http.post("/v1/admin/train", json={"tenant": tenant}, headers=admin)
        assert again.status_code == 409

        async def finished() -> dict[str, Any]:
            status = (await http.get("/v1/admin/training", headers=admin)).json()
            return status if status["running"] is None and status["runs"] else {}

        deadline = time.monotonic() + 400
        while not (status := await finished()):
            assert time.monotonic() < deadline, "the run did not finish"
            await asyncio.sleep(0.5)
        [run] = status["runs"]
        assert run["status"] in ("promoted", "rejected"), run
        assert run["dataset_version"]
        assert run["train_examples"] + run["holdout_examples"] == 24
        # The topics are shared with other tests of the session: match on this run's ids.
        await wait_for(lambda: mine(seen, Topic.TRAINING_RUN_FINISHED, "run_id", run["run_id"]))
        adapter_id = run["adapter_id"]
        serving = (await http.get("/v1/adapters", headers=admin)).json()
        assert adapter_id in [a["adapter_id"] for a in serving["adapters"]]
        check_report(Path(run["report_path"]))
        if run["status"] == "rejected":
            assert serving["serving"]["adapter_id"] is None
            await wait_for(lambda: mine(seen, Topic.ADAPTER_REJECTED, "adapter_id", adapter_id))

        promoted = await http.post(f"/v1/adapters/{adapter_id}/promote", headers=admin, json={})
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["adapter_id"] == adapter_id
        rolled = await http.post("/v1/adapters/rollback", headers=admin, json={"reason": "test"})
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["adapter_id"] is None
        missing = await http.post(f"/v1/adapters/{'0' * 64}/promote", headers=admin, json={})
        assert missing.status_code == 404
        await wait_for(lambda: mine(seen, Topic.ADAPTER_ROLLED_BACK, "from_adapter_id", adapter_id))
        await wait_for(lambda: mine(seen, Topic.ADAPTER_PROMOTED, "adapter_id", adapter_id))

    [back] = mine(seen, Topic.ADAPTER_ROLLED_BACK, "from_adapter_id", adapter_id)
    assert back["to_adapter_id"] is None
    assert back["reason"] == "test"
