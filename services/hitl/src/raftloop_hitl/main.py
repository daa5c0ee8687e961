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
from raftloop_core.settings import (
    MIN_SECRET_CHARS,
    SettingsError,
    check_kafka_secrets,
    require_secret,
)
from raftloop_hitl.accounts import AccountError, check_account, is_guessable
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


def check_bootstrap_admin(settings: HitlSettings) -> None:
    """Refuse an HITL_ADMIN_* pair that would create no admin, or a weak one in production.

    Raises:
        SettingsError: one of the pair is missing, the account is invalid, or (production) the
            password is short, a development value, contains the username or repeats a few
            characters.
    """
    username, password = settings.admin_username, settings.admin_password
    if not username and password is None:
        return
    if not username:
        raise SettingsError("HITL_ADMIN_PASSWORD is set but HITL_ADMIN_USERNAME is not; set both")
    if password is None:
        raise SettingsError("HITL_ADMIN_USERNAME is set but HITL_ADMIN_PASSWORD is not; set both")
    require_secret(
        password,
        name="the bootstrap admin password",
        env="HITL_ADMIN_PASSWORD",
        runtime=settings.runtime,
    )
    plain = password.get_secret_value()
    try:
        check_account(username, plain, "admin")
    except AccountError as exc:
        raise SettingsError(f"HITL_ADMIN_USERNAME / HITL_ADMIN_PASSWORD: {exc}") from None
    if settings.runtime.production and is_guessable(username, plain):
        raise SettingsError(
            "the bootstrap admin password is weak (it contains the username or repeats a few "
            f"characters); set HITL_ADMIN_PASSWORD to a random secret of at least "
            f"{MIN_SECRET_CHARS} characters"
        )


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
    check_bootstrap_admin(settings)
    check_kafka_secrets(settings.kafka, settings.runtime)
    secret = session_secret(settings)
    keys = KeyStore.for_runtime(settings.runtime, settings.api_keys_file)
    return create_app(
        settings,
        engine=make_engine(settings.database_url()),
        broker=make_broker(settings.kafka, client_id="hitl"),
        keys=keys,
        session_secret=secret,
    )
