"""Composition root: the only module that reads the environment and builds real clients.

Run with `uvicorn --factory raftloop_gateway.main:build`.
"""

from __future__ import annotations

import os

import httpx
import httpx2
from fastapi import FastAPI
from openai import AsyncOpenAI

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
from raftloop_gateway.adapters import RagRetriever
from raftloop_gateway.app import create_app
from raftloop_gateway.domain import Backend, Retriever
from raftloop_gateway.settings import GatewaySettings


def _backend(settings: GatewaySettings, registry: AdapterRegistry) -> Backend:
    if settings.backend == "upstream":
        if not settings.upstream_url:
            raise SettingsError("GATEWAY_BACKEND=upstream needs GATEWAY_UPSTREAM_URL")
        key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else "none"
        client = AsyncOpenAI(
            base_url=settings.upstream_url,
            api_key=key,
            timeout=settings.upstream_timeout_s,
            max_retries=settings.upstream_max_retries,
            # openai's own HTTP library (httpx2), with a pool sized for a busy gateway.
            http_client=httpx2.AsyncClient(
                limits=httpx2.Limits(max_connections=256, max_keepalive_connections=64)
            ),
        )
        from raftloop_gateway.upstream import UpstreamBackend

        name = settings.upstream_model or settings.base_model_name or "base"
        return UpstreamBackend(client, base_model=name, registry_dir=settings.upstream_registry_dir)
    from raftloop_gateway.local import LocalBackend

    path = settings.base_model_path
    if path is None:
        from raftloop_models import ensure_smollm2

        path = ensure_smollm2()
    if not path.is_dir():
        raise SettingsError(f"GATEWAY_BASE_MODEL_PATH {path} is not a model folder")
    return LocalBackend(
        path,
        name=settings.base_model_name or path.name,
        resolve=registry.get,
        max_batch=settings.max_concurrency,
        max_adapters=settings.max_adapters,
        dtype=settings.model_dtype,
    )


def _retriever(settings: GatewaySettings) -> Retriever | None:
    if not settings.rag_url:
        return None
    secret = require_secret(
        settings.rag_api_key, name="rag key", env="GATEWAY_RAG_API_KEY", runtime=settings.runtime
    )
    key = (
        secret.get_secret_value()
        if secret is not None
        else ensure_dev_credentials(settings.runtime).api_keys["internal"]
    )
    client = httpx.AsyncClient(timeout=settings.rag_timeout_s)
    return RagRetriever(client, base_url=settings.rag_url, api_key=key)


def build() -> FastAPI:
    """Build the gateway from the environment (`GATEWAY_*`, `RAFTLOOP_*`, `KAFKA_*`)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Before torch loads: OpenMP threads that spin while waiting collapse under shared cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    settings = GatewaySettings()
    runtime = settings.runtime
    configure_logging("gateway", level=runtime.log_level, fmt=runtime.log_format)
    try:
        check_kafka_secrets(settings.kafka, runtime)
        check_secret(
            settings.upstream_api_key,
            name="the upstream API key",
            env="GATEWAY_UPSTREAM_API_KEY",
            runtime=runtime,
        )
        keys = KeyStore.for_runtime(runtime, settings.keys_file)
        registry = AdapterRegistry(settings.registry_root)
        kafka = settings.kafka.model_copy(
            update={"request_timeout_ms": settings.publish_timeout_ms}
        )
        # A few ms of producer linger turns a drained batch into one produce request.
        broker = make_broker(kafka, client_id=f"{kafka.client_id}-gateway", linger_ms=5)
        return create_app(
            settings,
            keys=keys,
            backend=_backend(settings, registry),
            registry=registry,
            broker=broker,
            retriever=_retriever(settings),
        )
    except SettingsError as exc:
        raise SystemExit(f"gateway: {exc}") from None
