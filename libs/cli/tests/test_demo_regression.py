"""`raftloop demo` gives the trainer the handbook's general questions before any chat (#19).

The trainer is the real service app (its routes, validation and SQLite store), called through
the same httpx client the demo uses; no broker or model is started for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import raftloop_demo_kb as kb
from fastapi.testclient import TestClient

from raftloop_cli.demo import Demo, Endpoints, print_figures
from raftloop_core.api import ApiKey, KeyStore
from raftloop_core.credentials import hash_key
from raftloop_core.messaging import make_broker
from raftloop_core.settings import RuntimeSettings

# The cli does not depend on the trainer; where it is installed, as in the dev environment,
# the demo is checked against its real routes.
trainer_main = pytest.importorskip("raftloop_trainer.main")
trainer_app = pytest.importorskip("raftloop_trainer.app")

ADMIN = "demo-test-admin-key"


@pytest.fixture
def demo(tmp_path: Path) -> Demo:
    from raftloop_trainer.adapters import KafkaEventSink
    from raftloop_trainer.settings import TrainerSettings

    model = tmp_path / "model"  # the routes never load the model: its config stands in
    model.mkdir()
    (model / "config.json").write_text("{}")
    settings = TrainerSettings(
        runtime=RuntimeSettings(data_dir=tmp_path / "var"), base_model_path=model
    )
    broker = make_broker(settings.kafka)  # never started: no lifespan runs here
    runner = trainer_main.build_runner(settings, KafkaEventSink(broker))
    keys = KeyStore([ApiKey(key_id="adm", key_sha256=hash_key(ADMIN), role="admin")])
    app = trainer_app.create_app(settings, keys=keys, runner=runner, broker=broker)
    ends = Endpoints({"trainer": "http://trainer"}, "client", "internal", ADMIN)
    d = Demo(ends, tenant="default", concurrency=1, timeout_s=60)
    # starlette's TestClient is an httpx2 client, the demo's an httpx one: the same API.
    d.http = TestClient(app)  # type: ignore[assignment]
    return d


def test_the_demo_sets_the_handbooks_general_questions_for_its_tenant(demo: Demo) -> None:
    demo.ensure_regression_set(kb.regression_questions())
    got = demo.call("trainer", "GET", "/v1/admin/regression", ADMIN).json()
    assert got["tenant"] == "default"  # the admin key's tenant
    assert [(i["id"], i["question"], i["answer"]) for i in got["items"]] == [
        (q.id, q.question, q.answer) for q in kb.regression_questions()
    ]


def test_a_tenants_own_set_is_kept(demo: Demo) -> None:
    own = {"items": [{"id": "mine", "question": "What is our SLA?", "answer": "99.9%."}]}
    demo.call("trainer", "PUT", "/v1/admin/regression", ADMIN, json=own)
    demo.ensure_regression_set(kb.regression_questions())
    got = demo.call("trainer", "GET", "/v1/admin/regression", ADMIN).json()
    assert got["items"] == own["items"]


def test_the_figures_say_when_forgetting_was_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    note = "no regression set for this tenant: PUT /v1/admin/regression"
    report = {"sets": {"holdout": []}, "regression": {"items": 0, "note": note}}
    print_figures({"holdout_examples": 3}, report | {"_dir": str(tmp_path)})
    assert f"forgetting not checked: {note}" in capsys.readouterr().out
    print_figures({}, report | {"regression": {"items": 2}, "_dir": str(tmp_path)})
    assert "forgetting not checked" not in capsys.readouterr().out
