"""Development credentials: written once to `<data folder>/credentials.json`, owner-only.

Production mode never creates or reads this file: secrets come from the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from raftloop_core.settings import DEV_SECRET_PREFIX, RuntimeSettings, SettingsError

ROLES = ("client", "internal", "admin")
FILE_NAME = "credentials.json"


class Account(BaseModel):
    """A web UI account."""

    model_config = ConfigDict(frozen=True)

    username: str
    password: str
    role: str


class DevCredentials(BaseModel):
    """One API key per role and one reviewer and one admin account for the UI."""

    model_config = ConfigDict(frozen=True)

    api_keys: dict[str, str]
    accounts: list[Account]
    session_secret: str


def hash_key(key: str) -> str:
    """How API keys are stored: sha256 hex (keys are long random tokens, so no salt is needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _new_secret() -> str:
    return DEV_SECRET_PREFIX + secrets.token_urlsafe(24)


def credentials_path(runtime: RuntimeSettings) -> Path:
    """Where development credentials live."""
    return runtime.data_dir / FILE_NAME


def ensure_dev_credentials(runtime: RuntimeSettings) -> DevCredentials:
    """Load the development credentials, creating them on first use.

    Raises:
        SettingsError: in production mode, which creates nothing.
    """
    if runtime.production:
        raise SettingsError(
            "production mode creates no credentials; configure the secrets in the environment"
        )
    path = credentials_path(runtime)
    if path.exists():
        return DevCredentials.model_validate_json(path.read_text())
    creds = DevCredentials(
        api_keys={role: _new_secret() for role in ROLES},
        accounts=[
            Account(username="reviewer", password=_new_secret(), role="reviewer"),
            Account(username="admin", password=_new_secret(), role="admin"),
        ],
        session_secret=_new_secret(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(creds.model_dump(), fh, indent=2)
    try:
        os.link(tmp, path)  # atomic and fails if another process created it first
    except FileExistsError:
        tmp.unlink()
        return DevCredentials.model_validate_json(path.read_text())
    tmp.unlink()
    return creds
