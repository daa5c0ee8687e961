import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from raftloop_core.api import KeyStore
from raftloop_core.credentials import ensure_dev_credentials, hash_key
from raftloop_core.messaging import RetryPolicy
from raftloop_core.settings import (
    MIN_SECRET_CHARS,
    KafkaSettings,
    Mode,
    RuntimeSettings,
    SettingsError,
    check_kafka_secrets,
    check_secret,
    require_secret,
)


def test_bad_bootstrap_servers_say_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "localhost")
    with pytest.raises(ValidationError, match="KAFKA_BOOTSTRAP_SERVERS"):
        KafkaSettings()


def test_unknown_mode_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAFTLOOP_MODE", "staging")
    with pytest.raises(ValidationError, match="mode"):
        RuntimeSettings()


def test_production_refuses_missing_and_development_secrets(tmp_path: Path) -> None:
    prod = RuntimeSettings(mode=Mode.PRODUCTION, data_dir=tmp_path)
    dev = RuntimeSettings(data_dir=tmp_path)
    with pytest.raises(SettingsError, match="set HITL_SESSION_SECRET"):
        require_secret(None, name="session secret", env="HITL_SESSION_SECRET", runtime=prod)
    with pytest.raises(SettingsError, match="development or too-short"):
        require_secret(SecretStr("dev-abc"), name="s", env="X", runtime=prod)
    good = SecretStr("q" * 32)
    assert require_secret(good, name="s", env="X", runtime=prod) == good
    assert require_secret(None, name="s", env="X", runtime=dev) is None


def test_an_optional_secret_once_set_meets_the_same_minimum(tmp_path: Path) -> None:
    prod = RuntimeSettings(mode=Mode.PRODUCTION, data_dir=tmp_path)
    dev = RuntimeSettings(data_dir=tmp_path)
    assert check_secret(None, name="s", env="X", runtime=prod) is None
    assert check_secret(SecretStr(""), name="s", env="X", runtime=prod) == SecretStr("")
    short = SecretStr("k" * (MIN_SECRET_CHARS - 1))
    with pytest.raises(
        SettingsError, match=f"set X to a random secret of at least {MIN_SECRET_CHARS}"
    ):
        check_secret(short, name="s", env="X", runtime=prod)
    assert check_secret(short, name="s", env="X", runtime=dev) == short
    kafka = KafkaSettings(sasl_password=short)
    with pytest.raises(SettingsError, match="KAFKA_SASL_PASSWORD"):
        check_kafka_secrets(kafka, prod)
    check_kafka_secrets(KafkaSettings(sasl_password=SecretStr("k" * MIN_SECRET_CHARS)), prod)


def test_dev_credentials_are_created_once_owner_only(tmp_path: Path) -> None:
    runtime = RuntimeSettings(data_dir=tmp_path)
    first = ensure_dev_credentials(runtime)
    again = ensure_dev_credentials(runtime)
    assert first == again
    assert set(first.api_keys) == {"client", "internal", "admin"}
    mode = stat.S_IMODE((tmp_path / "credentials.json").stat().st_mode)
    assert mode == 0o600


def test_production_creates_no_credentials_and_needs_a_keys_file(tmp_path: Path) -> None:
    prod = RuntimeSettings(mode=Mode.PRODUCTION, data_dir=tmp_path)
    with pytest.raises(SettingsError):
        ensure_dev_credentials(prod)
    with pytest.raises(SettingsError, match="RAFTLOOP_API_KEYS_FILE"):
        KeyStore.for_runtime(prod, None)
    assert not (tmp_path / "credentials.json").exists()


def test_keys_file_is_looked_up_by_hash(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(
        f'[{{"key_id": "k1", "key_sha256": "{hash_key("s3cret")}", "tenant": "acme", '
        '"role": "client"}]'
    )
    store = KeyStore.from_file(keys)
    caller = store.lookup("s3cret")
    assert caller is not None
    assert (caller.tenant, caller.role) == ("acme", "client")
    assert store.lookup("wrong") is None
    keys.write_text("{not json")
    with pytest.raises(SettingsError, match="cannot load API keys"):
        KeyStore.from_file(keys)


def test_retry_backoff_grows_is_jittered_and_capped() -> None:
    policy = RetryPolicy(max_attempts=5, base_s=1.0, cap_s=4.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        delays = [policy.delay(attempt) for _ in range(200)]
        assert min(delays) >= ceiling / 2
        assert max(delays) <= ceiling
    assert not policy.exhausted(4)
    assert policy.exhausted(5)
