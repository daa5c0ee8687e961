"""The trainer's admin routes keep every admin inside its own tenant (issues #11, #17).

The service runs as in test_service.py (real broker, store, registry and lifespan); runs and
adapters are written straight into the store and the registry, so no model trains here.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from faststream.kafka import KafkaMessage
from safetensors.numpy import save_file

from raftloop_core.api import ApiKey, KeyStore
from raftloop_core.credentials import hash_key
from raftloop_core.events import ChatMessage, ExampleCurated, RetrievedChunk
from raftloop_core.messaging import consumer_options, ensure_topics, make_broker
from raftloop_core.registry import AdapterCard
from raftloop_core.settings import KafkaSettings, RuntimeSettings
from raftloop_core.topics import Topic
from raftloop_trainer.adapters import KafkaEventSink
from raftloop_trainer.app import create_app
from raftloop_trainer.domain import is_holdout
from raftloop_trainer.main import build_runner
from raftloop_trainer.runner import Runner
from raftloop_trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration

BASE = "tiny-llama"
OURS, THEIRS = "default-admin-key", "other-admin-key"
KEYS = KeyStore(
    [
        ApiKey(key_id="adm", key_sha256=hash_key(OURS), role="admin"),
        ApiKey(key_id="oth", key_sha256=hash_key(THEIRS), tenant="other", role="admin"),
    ]
)
ADMIN = {"Authorization": f"Bearer {OURS}"}
OTHER = {"Authorization": f"Bearer {THEIRS}"}


@dataclass
class Trainer:
    app: FastAPI
    http: httpx.AsyncClient
    runner: Runner
    settings: TrainerSettings
    seen: list[tuple[str, dict[str, Any]]]

    def add_run(self, tenant: str, seed: int) -> str:
        """A finished run of `tenant` and the adapter it registered; return the adapter id."""
        run_id = f"run-{uuid.uuid4().hex[:12]}"
        self.runner.store.start_run(run_id, tenant, BASE, "test", 0)
        folder = self.settings.state_dir / "made" / run_id
        folder.mkdir(parents=True)
        rng = np.random.default_rng(seed)
        weights = {"lora_A": rng.standard_normal((4, 8)).astype(np.float32)}
        save_file(weights, str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
        card = AdapterCard(
            base_model=BASE, run_id=run_id, dataset_version=f"d-{tenant}", tenant=tenant
        )
        adapter_id = self.runner.registry.add(folder, card)
        self.runner.store.finish_run(run_id, "rejected", adapter_id=adapter_id)
        return adapter_id

    def serving(self, tenant: str = "default") -> str | None:
        return self.runner.registry.serving(self.settings.alias, tenant).adapter_id


def training_example_id() -> uuid.UUID:
    """A random example id that the hash split puts in training (a fifth are held out)."""
    while is_holdout(str(example_id := uuid.uuid4())):
        pass
    return example_id


def curated(tenant: str) -> ExampleCurated:
    answer = "Plan 1 costs 4 dollars."
    return ExampleCurated(
        tenant=tenant,
        example_id=training_example_id(),  # pending counts training examples only
        interaction_id=uuid.uuid4(),
        source="approved",
        messages=[ChatMessage(role="user", content="What does plan 1 cost?")],
        question=f"What does plan 1 cost ({uuid.uuid4().hex[:6]})?",
        answer=answer,
        oracle_chunks=[
            RetrievedChunk(chunk_id="pricing#1", document_id="pricing", text=answer, score=0.8)
        ],
        base_model=BASE,
    )


async def wait_for(predicate: Callable[[], Any], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


@pytest.fixture
async def trainer(
    tmp_path: Path, kafka_settings: KafkaSettings, unique: Callable[[str], str]
) -> AsyncIterator[Trainer]:
    # The routes never load the base model, so a folder with its config stands in for one.
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    settings = TrainerSettings(
        runtime=RuntimeSettings(data_dir=tmp_path / "var"),
        kafka=kafka_settings,
        base_model_path=model,
        base_model_name=BASE,
        auto_train=False,
        alias=unique("serving"),  # other tests' gateways ignore switches of this alias
    )
    ensure_topics(kafka_settings)
    broker = make_broker(settings.kafka, client_id="trainer-tenancy-test")
    runner = build_runner(settings, KafkaEventSink(broker))
    app = create_app(settings, keys=KEYS, runner=runner, broker=broker)
    seen: list[tuple[str, dict[str, Any]]] = []
    watched = (Topic.ADAPTER_PROMOTED, Topic.ADAPTER_ROLLED_BACK)

    @broker.subscriber(*watched, **consumer_options(kafka_settings, group_id=unique("watch")))  # type: ignore[untyped-decorator]
    async def watch(msg: KafkaMessage) -> None:
        record: Any = msg.raw_message  # one aiokafka ConsumerRecord: not a batch subscriber
        seen.append((record.topic, await msg.decode()))  # type: ignore[arg-type]

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield Trainer(app, http, runner, settings, seen)


async def test_an_admin_starts_runs_only_for_its_own_tenant(trainer: Trainer) -> None:
    refused = await trainer.http.post("/v1/admin/train", json={"tenant": "default"}, headers=OTHER)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "forbidden"
    assert error["param"] == "tenant"
    assert "'other'" in error["message"]
    assert "omit `tenant`" in error["message"]

    scheduler = trainer.app.state.scheduler
    # Neither tenant has examples: each own-tenant request is admitted, and no run starts.
    for headers, body, tenant in [(OTHER, None, "other"), (ADMIN, {"tenant": "default"}, None)]:
        refused = await trainer.http.post("/v1/admin/train", json=body, headers=headers)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "nothing_to_train"
        assert f"tenant {tenant or 'default'!r}" in refused.json()["error"]["message"]
        await wait_for(lambda: not scheduler.busy)
    assert trainer.runner.store.runs() == []


async def test_training_status_shows_only_the_callers_tenant(trainer: Trainer) -> None:
    trainer.add_run("default", seed=1)
    theirs = trainer.add_run("other", seed=2)
    for _ in range(2):
        assert trainer.runner.store.add(curated("default")) == "added"
    fixed = {"source": "corrected", "rejected_answer": "Plan 1 is free."}
    assert trainer.runner.store.add(curated("default").model_copy(update=fixed)) == "added"
    job = trainer.settings.state_dir / "jobs" / "j"
    trainer.runner.current = {"run_id": "run-live", "tenant": "default", "job_dir": str(job)}

    other = (await trainer.http.get("/v1/admin/training", headers=OTHER)).json()
    assert other["running"] is None
    assert [r["tenant"] for r in other["runs"]] == ["other"]
    assert other["runs"][0]["adapter_id"] == theirs
    assert other["pending"] == []

    own = (await trainer.http.get("/v1/admin/training", headers=ADMIN)).json()
    assert own["running"]["run_id"] == "run-live"
    assert [r["tenant"] for r in own["runs"]] == ["default"]
    assert [(p["tenant"], p["new_examples"]) for p in own["pending"]] == [("default", 3)]
    [waiting] = own["pending"]
    assert (waiting["holdout_examples"], waiting["min_holdout_items"]) == (0, 20)
    assert "0 of the 20 items" in waiting["waiting_for"]
    assert (own["recipe"], waiting["pairs"], waiting["min_pairs"]) == ("sft", 1, 8)
    assert own["busy"] is False  # the scheduler itself started no run


async def test_adapters_list_only_those_of_the_callers_tenant(trainer: Trainer) -> None:
    ours = trainer.add_run("default", seed=1)
    theirs = trainer.add_run("other", seed=2)

    other = (await trainer.http.get("/v1/adapters", headers=OTHER)).json()
    assert [a["adapter_id"] for a in other["adapters"]] == [theirs]
    assert other["serving"]["alias"] == trainer.settings.alias
    own = (await trainer.http.get("/v1/adapters", headers=ADMIN)).json()
    assert [a["adapter_id"] for a in own["adapters"]] == [ours]


async def test_promoting_another_tenants_adapter_answers_as_if_it_were_absent(
    trainer: Trainer,
) -> None:
    ours = trainer.add_run("default", seed=1)

    hidden = await trainer.http.post(f"/v1/adapters/{ours}/promote", headers=OTHER, json={})
    missing = await trainer.http.post(f"/v1/adapters/{'0' * 64}/promote", headers=OTHER, json={})
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"]["code"] == missing.json()["error"]["code"]
    message = hidden.json()["error"]["message"]
    assert message == missing.json()["error"]["message"].replace("0" * 64, ours)
    assert trainer.serving() is None

    promoted = await trainer.http.post(f"/v1/adapters/{ours}/promote", headers=ADMIN, json={})
    assert promoted.status_code == 200, promoted.text
    assert trainer.serving() == ours


async def test_each_tenant_switches_only_its_own_alias(trainer: Trainer) -> None:
    ours = trainer.add_run("default", seed=1)
    theirs = trainer.add_run("other", seed=2)
    promoted = await trainer.http.post(f"/v1/adapters/{ours}/promote", headers=ADMIN, json={})
    assert promoted.status_code == 200, promoted.text
    assert (promoted.json()["tenant"], promoted.json()["adapter_id"]) == ("default", ours)

    # The other tenant's alias was never switched: its rollback touches nothing of ours.
    refused = await trainer.http.post("/v1/adapters/rollback", headers=OTHER, json={})
    assert refused.status_code == 409, refused.text
    assert "'other'" in refused.json()["error"]["message"]
    assert trainer.serving() == ours

    own = await trainer.http.post(f"/v1/adapters/{theirs}/promote", headers=OTHER, json={})
    assert own.status_code == 200, own.text
    assert trainer.serving("other") == theirs
    assert trainer.serving() == ours
    listed = (await trainer.http.get("/v1/adapters", headers=OTHER)).json()
    assert listed["serving"]["adapter_id"] == theirs

    rolled = await trainer.http.post("/v1/adapters/rollback", headers=ADMIN, json={"reason": "x"})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["adapter_id"] is None
    assert trainer.serving("other") == theirs
    again = await trainer.http.post("/v1/adapters/rollback", headers=ADMIN, json={})
    assert again.status_code == 409  # the base model serves: nothing to roll back

    def switched(topic: Topic) -> list[dict[str, Any]]:
        alias = trainer.settings.alias
        return [e for t, e in trainer.seen if t == topic and e["alias"] == alias]

    await wait_for(lambda: switched(Topic.ADAPTER_PROMOTED) and switched(Topic.ADAPTER_ROLLED_BACK))
    await wait_for(lambda: len(switched(Topic.ADAPTER_PROMOTED)) == 2)
    assert sorted(e["tenant"] for e in switched(Topic.ADAPTER_PROMOTED)) == ["default", "other"]
    assert [e["tenant"] for e in switched(Topic.ADAPTER_ROLLED_BACK)] == ["default"]


async def test_the_canary_is_set_per_tenant_through_the_trainer(trainer: Trainer) -> None:
    ours = trainer.add_run("default", seed=1)
    theirs = trainer.add_run("other", seed=2)
    hidden = await trainer.http.put(
        "/v1/adapters/canary", headers=OTHER, json={"adapter_id": ours, "share": 0.5}
    )
    assert hidden.status_code == 404, hidden.text
    assert hidden.json()["error"]["code"] == "adapter_not_found"
    set_ = await trainer.http.put(
        "/v1/adapters/canary", headers=OTHER, json={"adapter_id": theirs, "share": 0.5}
    )
    assert set_.status_code == 200, set_.text
    alias = trainer.settings.alias
    other = trainer.runner.registry.serving(alias, "other")
    assert (other.canary_adapter_id, other.canary_share) == (theirs, 0.5)
    assert trainer.runner.registry.serving(alias).canary_adapter_id is None
    off = await trainer.http.put("/v1/adapters/canary", headers=OTHER, json={"share": 0})
    assert off.json()["canary_adapter_id"] is None
