"""Composition root: the only module that reads the environment and builds real clients.

Run with `uvicorn --factory raftloop_hitl.main:build --port 8080`.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import SecretStr

from raftloop_core.api import KeyStore
from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.logs import configure_logging
from raftloop_core.messaging import make_broker
from raftloop_core.settings import SettingsError, require_secret
from raftloop_hitl.app import create_app
from raftloop_hitl.db import make_engine
from raftloop_hitl.settings import HitlSettings


def session_secret(settings: HitlSettings) -> SecretStr:
    """The cookie-signing secret: configured in production, from dev credentials otherwise.

    Raises:
        SettingsError: production without a strong HITL_SESSION_SECRET.
    """
    runtime = settings.runtime
    secret = require_secret(
        settings.session_secret, name="session secret", env="HITL_SESSION_SECRET", runtime=runtime
    )
    if secret is not None:
        return secret
    return SecretStr(ensure_dev_credentials(runtime).session_secret)


def build() -> FastAPI:
    """Build the hitl app from the environment; a missing setting ends it with one clear line."""
    try:
        return _build()
    except SettingsError as exc:
        raise SystemExit(f"hitl: {exc}") from None


def _build() -> FastAPI:
    settings = HitlSettings()
    configure_logging("hitl", level=settings.runtime.log_level, fmt=settings.runtime.log_format)
    # In production accounts come from HITL_ADMIN_* (bootstrap) or already sit in the database.
    if settings.admin_username and settings.admin_password is None:
        raise SettingsError("HITL_ADMIN_USERNAME is set but HITL_ADMIN_PASSWORD is not; set both")
    secret = session_secret(settings)
    keys = KeyStore.for_runtime(settings.runtime, settings.api_keys_file)
    return create_app(
        settings,
        engine=make_engine(settings.database_url()),
        broker=make_broker(settings.kafka, client_id="hitl"),
        keys=keys,
        session_secret=secret,
    )
