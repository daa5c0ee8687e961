"""Every secret of every service goes through the same production check (#17).

The secrets come from the services' settings classes (every `SecretStr` field, nested settings
included), not from a hand-kept list, so a new secret that skips the check fails here. Each is
set to a short value in production, with every other setting good: the service refuses to
start with one line naming that setting and the minimum length.

The gateway is not in this table: it is being rewritten under #16, and its
`GATEWAY_UPSTREAM_API_KEY` and `KAFKA_SASL_PASSWORD` do not go through the check yet.
"""

from __future__ import annotations

import importlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
from pydantic import AliasChoices, AliasPath, SecretStr
from pydantic_settings import BaseSettings

from raftloop_core.settings import MIN_SECRET_CHARS
from raftloop_gateway.settings import GatewaySettings
from raftloop_hitl.settings import HitlSettings
from raftloop_ingest.settings import IngestSettings
from raftloop_judge.settings import JudgeSettings
from raftloop_rag.settings import RagSettings
from raftloop_trainer.settings import TrainerSettings

SHORT = "k" * (MIN_SECRET_CHARS - 1)

# What makes each service use its secrets in production, with good values.
SERVICES: dict[str, tuple[type[BaseSettings], dict[str, str]]] = {
    "gateway": (
        GatewaySettings,
        {
            "GATEWAY_BACKEND": "upstream",
            "GATEWAY_UPSTREAM_URL": "http://127.0.0.1:9/v1",
            "GATEWAY_RAG_URL": "http://127.0.0.1:9",
        },
    ),
    "hitl": (HitlSettings, {"HITL_ADMIN_USERNAME": "root"}),
    "ingest": (IngestSettings, {}),
    "judge": (JudgeSettings, {}),
    "rag": (RagSettings, {"QDRANT_URL": "http://127.0.0.1:9"}),
    "trainer": (
        TrainerSettings,
        {"TRAINER_RAG_URL": "http://127.0.0.1:9", "TRAINER_JUDGE_URL": "http://127.0.0.1:9/v1"},
    ),
}


def _is_secret(annotation: object) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)


def secret_envs(settings: type[BaseSettings]) -> Iterator[str]:
    """The environment variable of every SecretStr field, nested settings included."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    for name, field in settings.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseSettings):
            yield from secret_envs(kind)
        elif _is_secret(kind):
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                yield str(alias.choices[-1]).upper()
            else:
                assert not isinstance(alias, AliasPath), f"{name}: an AliasPath names no variable"
                yield (alias or prefix + name).upper()


CASES = [(svc, env) for svc, (cls, _) in SERVICES.items() for env in secret_envs(cls)]


def test_the_table_finds_the_secrets_the_issue_names() -> None:
    found = set(CASES)
    assert ("hitl", "HITL_ADMIN_PASSWORD") in found
    assert ("trainer", "TRAINER_RAG_API_KEY") in found
    assert {svc for svc, env in found if env == "KAFKA_SASL_PASSWORD"} == set(SERVICES)


@pytest.mark.parametrize(("svc", "env"), CASES, ids=[f"{s}-{e}" for s, e in CASES])
def test_a_short_secret_refuses_to_start_in_production(
    svc: str, env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, extra = SERVICES[svc]
    keys = tmp_path / "keys.json"
    keys.write_text("[]")
    monkeypatch.setenv("RAFTLOOP_MODE", "production")
    monkeypatch.setenv("RAFTLOOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAFTLOOP_API_KEYS_FILE", str(keys))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    for other in secret_envs(settings):
        monkeypatch.setenv(other, secrets.token_urlsafe(24))
    monkeypatch.setenv(env, SHORT)
    build = importlib.import_module(f"raftloop_{svc}.main").build
    with pytest.raises(SystemExit) as refused:
        build()
    message = str(refused.value)
    assert env in message, message
    assert str(MIN_SECRET_CHARS) in message, message
    assert "\n" not in message
    assert not (tmp_path / "credentials.json").exists()
