"""Composition root: the only place that reads the environment or builds real clients.

Run: `python -m uvicorn --factory raftloop_judge.main:build --port 8003`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from openai import AsyncOpenAI

from raftloop_core.api import KeyStore
from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.logs import configure_logging
from raftloop_core.settings import SettingsError, check_kafka_secrets, require_secret
from raftloop_judge.adapters import (
    EndpointMisconfigured,
    OpenAIChatEndpoint,
    SentenceTransformerEmbedder,
    bundled_embedding_model,
)
from raftloop_judge.app import create_app
from raftloop_judge.rubrics import RubricError
from raftloop_judge.settings import JudgeSettings
from raftloop_judge.store import SqlJudgeStore


def endpoint_key(settings: JudgeSettings) -> str:
    """The key for the judge endpoint: the setting, else the internal dev key.

    Raises:
        SettingsError: production mode without JUDGE_ENDPOINT_API_KEY.
    """
    if settings.endpoint_api_key is not None or settings.runtime.production:
        secret = require_secret(
            settings.endpoint_api_key,
            name="the judge endpoint key",
            env="JUDGE_ENDPOINT_API_KEY",
            runtime=settings.runtime,
        )
        assert secret is not None
        return secret.get_secret_value()
    return ensure_dev_credentials(settings.runtime).api_keys["internal"]


def judge_client(settings: JudgeSettings, api_key: str) -> AsyncOpenAI:
    """The endpoint's client: its timeout is the stall timeout, the only bound on a request."""
    return AsyncOpenAI(
        base_url=settings.endpoint_url,
        api_key=api_key,
        timeout=settings.stall_timeout_s,
        max_retries=settings.max_retries,
    )


def build() -> FastAPI:
    """Build the judge from the environment."""
    settings = JudgeSettings()
    configure_logging("judge", level=settings.runtime.log_level, fmt=settings.runtime.log_format)
    try:
        check_kafka_secrets(settings.kafka, settings.runtime)
        keys = KeyStore.for_runtime(settings.runtime, settings.api_keys_file)
        client = judge_client(settings, endpoint_key(settings))
        model_dir = (
            Path(settings.embedding_model)
            if settings.embedding_model
            else bundled_embedding_model()
        )
        embedder = SentenceTransformerEmbedder(model_dir)
        return create_app(
            settings,
            endpoint=OpenAIChatEndpoint(client, settings.model),
            embedder=embedder,
            store=SqlJudgeStore(settings.database_url()),
            keys=keys,
        )
    except (SettingsError, RubricError, EndpointMisconfigured) as exc:
        raise SystemExit(f"judge: {exc}") from None
