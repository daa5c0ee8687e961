"""Production mode: no working default key, configured keys with their rate limits, overload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from gateway_support import Gateway, start_gateway
from openai.types.chat import ChatCompletionMessageParam

from raftloop_core.credentials import ensure_dev_credentials, hash_key
from raftloop_core.settings import KafkaSettings, RuntimeSettings

pytestmark = pytest.mark.integration
KEY = "prod-client-key-0123456789abcdef"
ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def test_production_without_keys_refuses_to_start(tmp_path: Path) -> None:
    env = os.environ | {"RAFTLOOP_MODE": "production", "RAFTLOOP_DATA_DIR": str(tmp_path)}
    env.pop("RAFTLOOP_API_KEYS_FILE", None)
    result = subprocess.run(
        [sys.executable, "-c", "from raftloop_gateway.main import build; build()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("gateway: production mode needs API keys")
    assert "RAFTLOOP_API_KEYS_FILE" in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "credentials.json").exists()


@pytest.fixture(scope="module")
def production(
    tiny_model_dir: Path, kafka_settings: KafkaSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("production")
    # A stale development credentials file must not open the door in production.
    dev = ensure_dev_credentials(RuntimeSettings(data_dir=folder / "var"))
    keys = folder / "keys.json"
    row = {"key_id": "prod", "key_sha256": hash_key(KEY), "tenant": "acme", "role": "client"}
    keys.write_text(json.dumps([row | {"requests_per_minute": 3}]))
    gw = start_gateway(
        folder,
        model_dir=tiny_model_dir,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        env={
            "RAFTLOOP_MODE": "production",
            "RAFTLOOP_API_KEYS_FILE": str(keys),
            "GATEWAY_MAX_CONCURRENCY": "1",
            "GATEWAY_MAX_QUEUE": "0",
        },
    )
    gw.keys = {"prod": KEY, **{f"dev-{k}": v for k, v in dev.api_keys.items()}}
    yield gw
    gw.stop()


def test_dev_keys_do_not_work_in_production(production: Gateway) -> None:
    for role in ("client", "internal", "admin"):
        with pytest.raises(openai.AuthenticationError):
            production.client(f"dev-{role}").models.list()


def test_overload_is_429_and_rate_limits_apply_per_key(production: Gateway) -> None:
    client = production.client("prod")

    def ask(_: int) -> str:
        try:
            client.chat.completions.create(model="raftloop", messages=ASK, max_tokens=48)
        except openai.RateLimitError as exc:
            return str(exc)
        return "ok"

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(ask, range(3)))
    # One slot and no queue: concurrent requests are refused while one runs.
    assert any("at capacity" in outcome for outcome in outcomes), outcomes
    assert "ok" in outcomes
    # Three requests a minute for this key, all spent above.
    with pytest.raises(openai.RateLimitError, match="request rate limit of 3/min") as limited:
        client.chat.completions.create(model="raftloop", messages=ASK, max_tokens=1)
    assert int(limited.value.response.headers["retry-after"]) >= 1


def test_a_model_that_cannot_load_means_503_with_the_reason(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    gw = start_gateway(
        tmp_path,
        model_dir=empty,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        ready_path="/healthz",
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            with pytest.raises(openai.APIStatusError) as refused:
                gw.client().chat.completions.create(model="raftloop", messages=ASK)
            assert refused.value.status_code == 503
            if "could not be loaded" in str(refused.value) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "GATEWAY_BASE_MODEL_PATH" in str(refused.value)
        assert httpx.get(f"{gw.url}/readyz").status_code == 503
    finally:
        gw.stop()
