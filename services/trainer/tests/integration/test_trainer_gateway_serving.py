"""The trainer's adapters reach a running gateway, each for its own tenant: curated examples of two
tenants published on the real broker trigger a run per tenant in the trainer service, whose
promotions (content-addressed adapters in the shared registry, adapter.promoted.v1 on the
broker) a real gateway process picks up without a restart, and each tenant's chats are served by
its own adapter, never the other's (issue #17). The gate's pairwise judge is the gateway's own
OpenAI-compatible endpoint, called with the platform's key."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from raftloop_core.api import KeyStore
from raftloop_core.credentials import hash_key
from raftloop_core.embedded import free_port
from raftloop_core.events import ChatMessage, ExampleCurated, RetrievedChunk, event_key
from raftloop_core.messaging import ensure_topics, make_broker
from raftloop_core.registry import AdapterRegistry
from raftloop_core.settings import KafkaSettings, RuntimeSettings
from raftloop_core.testing import spawn_service, stop_service, uvicorn_command
from raftloop_core.topics import Topic
from raftloop_trainer.adapters import KafkaEventSink
from raftloop_trainer.app import create_app
from raftloop_trainer.domain import RegressionItem, is_holdout
from raftloop_trainer.main import build_runner
from raftloop_trainer.settings import TrainerSettings
from raftloop_trainer.train import LoraParams

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TRAIN, HOLDOUT = 8, 3
GENERAL = [
    RegressionItem("capital", "What is the capital of France?", "Paris."),
    RegressionItem("water", "What is the chemical symbol for water?", "H2O."),
]
TENANTS = ("acme", "globex")
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What does plan 1 cost?"}]


@dataclass(frozen=True)
class RunningGateway:
    url: str
    keys: dict[str, str]
    """A client key per tenant, and `platform`: the platform's own key, for any tenant."""
    registry: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def client(self, tenant: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.keys[tenant], max_retries=0)


def write_keys(path: Path) -> dict[str, str]:
    """A keys file with a client key per tenant and the platform's internal key."""
    keys = {name: f"rl-{secrets.token_urlsafe(24)}" for name in (*TENANTS, "platform")}
    records: list[dict[str, str | list[str]]] = [
        {"key_id": f"{t}-client", "key_sha256": hash_key(keys[t]), "tenant": t, "role": "client"}
        for t in TENANTS
    ]
    records.append(
        {
            "key_id": "platform",
            "key_sha256": hash_key(keys["platform"]),
            "role": "internal",
            "tenants": ["*"],
        }
    )
    path.write_text(json.dumps(records))
    return keys


@contextmanager
def running_gateway(
    folder: Path, model_dir: Path, bootstrap: str, name: str
) -> Iterator[RunningGateway]:
    """`uvicorn --factory raftloop_gateway.main:build` on the tiny model, polling the alias only
    every 10 minutes: a switch within the test comes from the promotion event."""
    data_dir = folder / "var"
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = write_keys(folder / "keys.json")
    port = free_port()
    log = folder / "gateway.log"
    env = os.environ | {
        "RAFTLOOP_DATA_DIR": str(data_dir),
        "RAFTLOOP_API_KEYS_FILE": str(folder / "keys.json"),
        "RAFTLOOP_LOG_FORMAT": "text",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "GATEWAY_BASE_MODEL_PATH": str(model_dir),
        "GATEWAY_BASE_MODEL_NAME": name,
        "GATEWAY_PORT": str(port),
        "GATEWAY_ALIAS_POLL_S": "600",
        "GATEWAY_MAX_TOKENS_LIMIT": "64",
    }
    proc = spawn_service(
        uvicorn_command("raftloop_gateway.main:build", port),
        env=env,
        log=log,
        ready_url=f"http://127.0.0.1:{port}/readyz",
        timeout_s=180,
        name="gateway",
    )
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", keys, data_dir / "registry", log, proc)
    finally:
        stop_service(proc, timeout_s=15)


def curated(tenant: str, base_model: str) -> list[ExampleCurated]:
    """TRAIN training examples after HOLDOUT hold-out ones (the split is by id hash)."""
    train: list[ExampleCurated] = []
    held: list[ExampleCurated] = []
    i = 0
    while len(train) < TRAIN or len(held) < HOLDOUT:
        example_id = uuid.uuid4()
        split = held if is_holdout(str(example_id)) else train
        if len(split) >= (HOLDOUT if split is held else TRAIN):
            continue
        # Distinct (the store drops duplicates), and different per tenant: two adapters.
        price = i + 3 if tenant == TENANTS[0] else 100 * (i + 7)
        answer = f"Plan {i} costs {price} dollars."
        split.append(
            ExampleCurated(
                tenant=tenant,
                example_id=example_id,
                interaction_id=uuid.uuid4(),
                source="approved",
                messages=[ChatMessage(role="user", content=f"What does plan {i} cost?")],
                question=f"What does plan {i} cost?",
                answer=answer,
                oracle_chunks=[
                    RetrievedChunk(
                        chunk_id=f"pricing#{i}",
                        document_id="pricing",
                        text=f"Our plans are listed here. {answer} Taxes are extra.",
                        score=0.9,
                    )
                ],
                base_model=base_model,
            )
        )
        i += 1
    return held + train


def answer(gateway: RunningGateway, tenant: str) -> tuple[str, str | None]:
    done = gateway.client(tenant).chat.completions.create(
        model="raftloop",
        messages=ASK,
        max_tokens=10,
        temperature=0,
    )
    return done.choices[0].message.content or "", done.system_fingerprint


def check_report(path: Path, gateway_url: str) -> None:
    """The run checked its tenant's own general questions, and the gateway judged its pairs."""
    report = json.loads(path.read_text())
    assert report["regression"]["items"] == len(GENERAL)
    pairwise = report["pairwise"]
    assert pairwise["judge"].startswith(f"endpoint:first listed model@{gateway_url}/v1")
    # The gateway answered the judge (the tiny model may give no readable verdict).
    assert pairwise["measured"] or "no winner" in pairwise["reason"], pairwise


async def test_each_tenants_promotion_is_served_to_its_own_chats(
    tmp_path: Path, tiny_model_dir: Path, kafka_settings: KafkaSettings
) -> None:
    ensure_topics(kafka_settings)
    # A base model name of its own: the session's other trainer tests publish curated examples
    # for "tiny-llama" on the same topic, and must not trigger runs here.
    name = f"tiny-{uuid.uuid4().hex[:6]}"
    with running_gateway(
        tmp_path / "gw", tiny_model_dir, kafka_settings.bootstrap_servers, name
    ) as gw:
        base_answer, fingerprint = answer(gw, TENANTS[0])
        assert fingerprint == "base"
        settings = TrainerSettings(
            runtime=RuntimeSettings(data_dir=tmp_path / "trainer"),
            kafka=kafka_settings,
            registry_dir=gw.registry,
            base_model_path=tiny_model_dir,
            base_model_name=name,
            min_new_examples=TRAIN,
            max_age_hours=None,
            trigger_poll_s=1.0,
            lora=LoraParams(
                max_steps=6, batch_size=2, warmup_steps=0, max_length=256, learning_rate=0.02
            ),
            device="cpu",
            regression_items=2,
            eval_max_new_tokens=6,
            # This test is about delivery, not quality: the gate lets the tiny model's adapter
            # through (the SmolLM2 gate test covers the gate's judgement).
            gate_margin=-1.0,
            max_regression_drop=1.0,
            min_holdout_items=1,
            judge_url=f"{gw.url}/v1",
            judge_api_key=gw.keys["platform"],
        )
        broker = make_broker(settings.kafka, client_id="trainer-serving-test")
        runner = build_runner(settings, KafkaEventSink(broker))
        app = create_app(settings, keys=KeyStore([]), runner=runner, broker=broker)
        for tenant in TENANTS:  # each tenant's own forgetting check (issue #19)
            runner.store.replace_regression(tenant, GENERAL)
        async with app.router.lifespan_context(app):
            for tenant in TENANTS:
                for event in curated(tenant, name):
                    await broker.publish(
                        event,
                        topic=Topic.EXAMPLE_CURATED,
                        key=event_key(Topic.EXAMPLE_CURATED, event),
                    )
            # One run at a time: each tenant's threshold starts its own, one after the other.
            deadline = time.monotonic() + 600
            while True:
                runs = await asyncio.to_thread(runner.store.runs)
                if len(runs) == len(TENANTS) and all(r["status"] != "running" for r in runs):
                    break
                status = await asyncio.to_thread(runner.status)
                assert time.monotonic() < deadline, f"runs not finished: {runs} {status}"
                await asyncio.sleep(0.5)
        by_tenant = {r["tenant"]: r for r in runs}
        assert set(by_tenant) == set(TENANTS), runs
        registry = AdapterRegistry(gw.registry)
        for tenant, run in by_tenant.items():
            assert run["status"] == "promoted", run
            assert run["trigger"].startswith("trigger:"), run
            assert registry.serving("serving", tenant).adapter_id == run["adapter_id"]
            assert registry.card(run["adapter_id"]).tenant == tenant
        adapters = {t: str(r["adapter_id"]) for t, r in by_tenant.items()}
        assert len(set(adapters.values())) == len(TENANTS)  # trained on different data

        # Each tenant's chats get its own adapter, once the gateway has followed both events.
        deadline = time.monotonic() + 60
        while {t: answer(gw, t)[1] for t in TENANTS} != adapters:
            assert time.monotonic() < deadline, f"gateway serves {[answer(gw, t) for t in TENANTS]}"
            await asyncio.sleep(0.2)
        for _ in range(3):  # and never the other's, whichever asks first
            for tenant in (*TENANTS, *reversed(TENANTS)):
                assert answer(gw, tenant)[1] == adapters[tenant]
        assert gw.proc.poll() is None  # the same process, never restarted
        assert answer(gw, TENANTS[0])[0] != base_answer

        check_report(Path(by_tenant[TENANTS[0]]["report_path"]), gw.url)
