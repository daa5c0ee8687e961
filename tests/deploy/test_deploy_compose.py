"""deploy/compose.yaml: validated by docker-compose itself, then checked against the services."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # ships no type information
from deploy_tools import (
    COMPOSE,
    DEPLOY,
    SERVICES,
    compose_variables,
    render_compose,
    required_variables,
    run,
    tool,
    write_test_env,
)
from pydantic_settings import BaseSettings

pytestmark = pytest.mark.integration

SECRETS = {
    "POSTGRES_PASSWORD",
    "QDRANT_API_KEY",
    "RAFTLOOP_INTERNAL_API_KEY",
    "JUDGE_ENDPOINT_API_KEY",
    "INGEST_PII_HASH_KEY",
    "HITL_SESSION_SECRET",
    "HITL_ADMIN_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "RAFTLOOP_API_KEYS_HOST_FILE",
    "RAFTLOOP_METRICS_KEY_HOST_FILE",
}
FILES = {"RAFTLOOP_API_KEYS_HOST_FILE", "RAFTLOOP_METRICS_KEY_HOST_FILE"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The stack as docker-compose resolves it with random secrets (tool: docker-compose)."""
    return render_compose(write_test_env(tmp_path_factory.mktemp("compose")))


def test_docker_compose_config_validates(rendered: dict[str, Any]) -> None:
    wanted = {"kafka-1", "kafka-2", "kafka-3", "topics", "qdrant", "postgres", "prometheus"}
    assert wanted | {"grafana"} | set(SERVICES) <= set(rendered["services"])


def test_compose_refuses_to_run_without_each_secret(tmp_path: Path) -> None:
    exe = tool("docker-compose")
    assert required_variables() >= SECRETS
    full = write_test_env(tmp_path).read_text().splitlines()
    for name in sorted(SECRETS):
        env = tmp_path / f"without-{name}.env"
        env.write_text("\n".join(line for line in full if not line.startswith(f"{name}=")))
        done = run(exe, "-f", str(COMPOSE), "--env-file", str(env), "config", "-q")
        assert done.returncode != 0, f"compose ran without {name}"
        assert name in done.stderr


def test_kafka_is_three_kraft_brokers_with_rf3_and_min_isr2(rendered: dict[str, Any]) -> None:
    brokers = [rendered["services"][f"kafka-{n}"] for n in (1, 2, 3)]
    for number, broker in enumerate(brokers, start=1):
        env = broker["environment"]
        assert broker["image"].startswith("apache/kafka:")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_NODE_ID"] == str(number)
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    topics = rendered["services"]["topics"]
    assert topics["command"] == ["broker"]
    assert topics["environment"]["KAFKA_REPLICATION_FACTOR"] == "3"


@pytest.mark.parametrize("svc", sorted(SERVICES))
def test_service_is_built_from_its_dockerfile_and_runs_uvicorn(
    rendered: dict[str, Any], svc: str
) -> None:
    spec = rendered["services"][svc]
    port = SERVICES[svc]
    assert spec["build"]["dockerfile"] == f"deploy/docker/{svc}.Dockerfile"
    assert Path(spec["build"]["context"]).resolve() == DEPLOY.parent
    assert spec["command"] == [
        "uvicorn", "--factory", f"raftloop_{svc}.main:build",
        "--host", "0.0.0.0", "--port", str(port),
    ]  # fmt: skip
    env = spec["environment"]
    assert env["RAFTLOOP_MODE"] == "production"
    assert env["KAFKA_ENABLE_IDEMPOTENCE"] == "true"
    assert env["KAFKA_REPLICATION_FACTOR"] == "3"
    assert env["KAFKA_BOOTSTRAP_SERVERS"].count(":9092") == 3
    assert env["RAFTLOOP_API_KEYS_FILE"] == "/run/secrets/api_keys"
    assert spec["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_trainer_and_gateway_share_the_adapter_registry(rendered: dict[str, Any]) -> None:
    def registry(svc: str) -> set[str]:
        mounts = rendered["services"][svc]["volumes"]
        return {m.split(":")[0] for m in mounts if ":/registry" in m}

    assert registry("gateway") == registry("trainer") == {"registry"}
    assert rendered["services"]["gateway"]["environment"]["GATEWAY_REGISTRY_DIR"] == "/registry"
    assert rendered["services"]["trainer"]["environment"]["TRAINER_REGISTRY_DIR"] == "/registry"


SETTINGS = {
    "gateway": ("raftloop_gateway.settings", "GatewaySettings"),
    "rag": ("raftloop_rag.settings", "RagSettings"),
    "ingest": ("raftloop_ingest.settings", "IngestSettings"),
    "judge": ("raftloop_judge.settings", "JudgeSettings"),
    "trainer": ("raftloop_trainer.settings", "TrainerSettings"),
    "hitl": ("raftloop_hitl.settings", "HitlSettings"),
}


def _env_names(model: type[BaseSettings]) -> set[str]:
    """Every env name a pydantic-settings class reads (prefix + field, or its aliases)."""
    prefix = model.model_config.get("env_prefix", "")
    names = set()
    for field, info in model.model_fields.items():
        names.add(f"{prefix}{field}".upper())
        alias = info.validation_alias
        choices = getattr(alias, "choices", None) or ([alias] if isinstance(alias, str) else [])
        names.update(str(c).upper() for c in choices)
        if isinstance(info.alias, str):
            names.add(info.alias.upper())
    return names


@pytest.mark.parametrize("svc", sorted(SERVICES))
def test_service_environment_is_read_by_its_settings(
    rendered: dict[str, Any], svc: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each `<SVC>_*` name in compose is a real setting, and the values parse in production."""
    module, name = SETTINGS[svc]
    model = getattr(pytest.importorskip(module), name)
    env = rendered["services"][svc]["environment"]
    prefix = model.model_config["env_prefix"]
    unknown = {k for k in env if k.startswith(prefix) and k not in _env_names(model)}
    assert not unknown, f"{svc} has no settings for {unknown}"
    for key in list(os.environ):
        if re.match(
            r"^(RAFTLOOP|KAFKA|DATABASE|QDRANT|GATEWAY|RAG|INGEST|JUDGE|TRAINER|HITL)_", key
        ):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("RAFTLOOP_DATA_DIR", str(tmp_path))
    settings = model()
    assert settings.runtime.production
    assert settings.kafka.enable_idempotence
    assert settings.kafka.replication_factor == 3
    assert len(settings.kafka.servers) == 3
    if hasattr(settings, "database"):
        assert settings.database.url.startswith("postgresql+psycopg://raftloop:")


def test_env_example_documents_every_variable() -> None:
    example = (DEPLOY / ".env.example").read_text().splitlines()
    documented = {line.split("=", 1)[0] for line in example if re.match(r"^[A-Z0-9_]+=", line)}
    assert compose_variables() <= documented, compose_variables() - documented
    for index, line in enumerate(example):
        if re.match(r"^[A-Z0-9_]+=", line):
            above = example[index - 1]
            assert above.startswith("#") or re.match(r"^[A-Z0-9_]+=", above), line
        if line.split("=", 1)[0] in SECRETS:
            assert line.endswith("="), f"{line}: a secret must have no value in the example"


def test_no_credential_has_a_default_in_compose() -> None:
    text = COMPOSE.read_text()
    for name in SECRETS:
        assert f"${{{name}:-" not in text, f"{name} has a default"
    spec = yaml.safe_load(text)
    for svc, body in spec["services"].items():
        for key, value in (body.get("environment") or {}).items():
            if re.search(r"(PASSWORD|SECRET|API_KEY|HASH_KEY)$", key) and value:
                assert "${" in str(value), f"{svc}.{key} is hard-coded"


def test_make_secrets_fills_an_env_that_compose_and_the_services_accept(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from raftloop_core.api import KeyStore
    from raftloop_core.settings import Mode, RuntimeSettings, require_secret

    done = run(sys.executable, str(DEPLOY / "make_secrets.py"), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    env = dict(
        line.split("=", 1)
        for line in (tmp_path / ".env").read_text().splitlines()
        if re.match(r"^[A-Z0-9_]+=", line)
    )
    assert (tmp_path / ".env").stat().st_mode & 0o077 == 0
    store = KeyStore.from_file(Path(env["RAFTLOOP_API_KEYS_HOST_FILE"]))
    caller = store.lookup(env["RAFTLOOP_INTERNAL_API_KEY"])
    assert caller is not None
    assert caller.role == "internal"
    assert caller.all_tenants  # the platform's key: gateway and trainer call rag for each tenant
    scraper = store.lookup(Path(env["RAFTLOOP_METRICS_KEY_HOST_FILE"]).read_text())
    assert scraper is not None
    assert (scraper.role, scraper.all_tenants) == ("metrics", False)
    assert "rl-" not in (tmp_path / "api-keys.json").read_text()
    production = RuntimeSettings(mode=Mode.PRODUCTION)
    for name in SECRETS - FILES - {"HITL_ADMIN_USERNAME"}:
        require_secret(SecretStr(env[name]), name=name, env=name, runtime=production)
    render_compose(tmp_path / ".env")
    again = run(sys.executable, str(DEPLOY / "make_secrets.py"), "--out", str(tmp_path))
    assert again.returncode == 1
    assert "exists" in again.stderr


def test_gpu_override_gives_the_trainer_a_gpu(tmp_path: Path) -> None:
    exe = tool("docker-compose")
    env = write_test_env(tmp_path)
    files = ["-f", str(COMPOSE), "-f", str(DEPLOY / "compose.gpu.yaml")]
    done = run(exe, *files, "--env-file", str(env), "config")
    assert done.returncode == 0, done.stderr
    trainer = yaml.safe_load(done.stdout)["services"]["trainer"]
    assert trainer["environment"]["TRAINER_DEVICE"] == "cuda"
    (device,) = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
