"""The Kubernetes GPU job's entry point (deploy/docker/trainer_run_once.py), on the real broker.

Runs the script as the Job does, as its own process, on the CPU with the tiny test model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_tools import DEPLOY, ROOT

from raftloop_core.messaging import ensure_topics
from raftloop_core.registry import AdapterRegistry
from raftloop_core.settings import KafkaSettings, RuntimeSettings
from raftloop_core.testing import plan_examples

pytestmark = pytest.mark.integration

SCRIPT = DEPLOY / "docker" / "trainer_run_once.py"
BASE = "tiny-llama"


def _env(data: Path, kafka: KafkaSettings, model: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "RAFTLOOP_"))}
    return env | {
        "RAFTLOOP_DATA_DIR": str(data),
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "HF_HUB_OFFLINE": "1",
        "TRAINER_BASE_MODEL_PATH": str(model),
        "TRAINER_BASE_MODEL_NAME": BASE,
        "TRAINER_DEVICE": "cpu",
        "TRAINER_LORA": json.dumps(
            {"max_steps": 2, "batch_size": 2, "warmup_steps": 0, "max_length": 256}
        ),
        "TRAINER_REGRESSION_ITEMS": "2",
        "TRAINER_EVAL_MAX_NEW_TOKENS": "4",
        "TRAINER_MIN_HOLDOUT_ITEMS": "3",
    }


def _job(tenant: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--tenant", tenant],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )


def test_job_with_nothing_to_train_exits_cleanly(
    tmp_path: Path, kafka_settings: KafkaSettings, tiny_model_dir: Path
) -> None:
    done = _job("empty", _env(tmp_path, kafka_settings, tiny_model_dir))
    assert done.returncode == 0, done.stderr
    assert "nothing to do: no training examples" in done.stdout


def test_job_without_a_broker_fails_with_one_clear_line(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    env = _env(tmp_path, KafkaSettings(bootstrap_servers="127.0.0.1:9"), tiny_model_dir)
    done = _job("default", env | {"KAFKA_REQUEST_TIMEOUT_MS": "2000"})
    assert done.returncode == 1
    assert "trainer job: no broker at 127.0.0.1:9" in done.stderr


@pytest.mark.slow
def test_job_trains_gates_and_registers_one_adapter(
    tmp_path: Path, kafka_settings: KafkaSettings, tiny_model_dir: Path
) -> None:
    from raftloop_trainer.settings import TrainerSettings
    from raftloop_trainer.store import DatasetStore

    ensure_topics(kafka_settings)
    settings = TrainerSettings(runtime=RuntimeSettings(data_dir=tmp_path))
    store = DatasetStore(settings.database_url())
    for event in plan_examples(24, base_model=BASE, tenant="acme"):
        assert store.add(event) == "added"

    done = _job("acme", _env(tmp_path, kafka_settings, tiny_model_dir))

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] in ("promoted", "rejected"), result
    adapters = AdapterRegistry(tmp_path / "registry").list()
    assert [a.adapter_id for a in adapters] == [result["adapter_id"]]
    [run] = store.runs(limit=10)
    assert run["status"] == result["status"]
