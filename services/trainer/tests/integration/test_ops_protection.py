"""With RAFTLOOP_PROTECT_OPS, the trainer's /metrics and API docs need an operator's key."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from raftloop_core.api import ApiKey, KeyStore
from raftloop_core.credentials import hash_key
from raftloop_core.messaging import make_broker
from raftloop_core.settings import KafkaSettings, RuntimeSettings
from raftloop_core.testing import ops_statuses
from raftloop_trainer.adapters import KafkaEventSink
from raftloop_trainer.app import create_app
from raftloop_trainer.main import build_runner
from raftloop_trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration


async def test_metrics_and_docs_need_an_operators_key_when_protected(
    tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    model = tmp_path / "model"  # the app never loads the base model here
    model.mkdir()
    (model / "config.json").write_text("{}")
    settings = TrainerSettings(
        runtime=RuntimeSettings(data_dir=tmp_path / "var", protect_ops=True),
        kafka=kafka_settings,
        base_model_path=model,
        base_model_name="tiny-llama",
        auto_train=False,
    )
    keys = KeyStore(
        [
            ApiKey(key_id="a", key_sha256=hash_key("acme-admin"), tenant="acme", role="admin"),
            ApiKey(key_id="m", key_sha256=hash_key("metrics-key"), role="metrics"),
        ]
    )
    broker = make_broker(settings.kafka, client_id="trainer-ops-test")
    app = create_app(
        settings, keys=keys, runner=build_runner(settings, KafkaEventSink(broker)), broker=broker
    )
    who = {"acme-admin": "acme-admin", "metrics": "metrics-key"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://trainer") as http:
        got = await ops_statuses(http, who)
    assert got["/metrics"] == {"none": 401, "acme-admin": 403, "metrics": 200}
    assert got["/openapi.json"] == {"none": 401, "acme-admin": 200, "metrics": 200}
    assert set(got["/healthz"].values()) == {200}
