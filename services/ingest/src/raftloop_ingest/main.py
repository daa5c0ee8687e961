"""Composition root: the only module that reads the environment or builds real clients.

Run with `python -m uvicorn --factory raftloop_ingest.main:build --port 8002`.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from fastapi import FastAPI

from raftloop_core.api import KeyStore
from raftloop_core.logs import configure_logging
from raftloop_core.settings import SettingsError, check_kafka_secrets, require_secret
from raftloop_ingest.adapters import SqlIngestStore, make_engine
from raftloop_ingest.app import create_app
from raftloop_ingest.redaction import Redactor, build_analyzer, resolve_ner_model
from raftloop_ingest.settings import IngestSettings

HASH_KEY_FILE = "pii-hash.key"
log = logging.getLogger(__name__)


def hash_key(settings: IngestSettings) -> bytes:
    """The key of the placeholder hashes: configured, or generated once in development.

    Raises:
        SettingsError: production without `INGEST_PII_HASH_KEY`.
    """
    configured = require_secret(
        settings.pii_hash_key,
        name="the PII hash key",
        env="INGEST_PII_HASH_KEY",
        runtime=settings.runtime,
    )
    if configured is not None:
        return configured.get_secret_value().encode()
    path: Path = settings.runtime.path("ingest", HASH_KEY_FILE)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip().encode()


def build_store(settings: IngestSettings) -> SqlIngestStore:
    """The state store at the configured database."""
    return SqlIngestStore(make_engine(settings.database_url()))


def build() -> FastAPI:
    """Build the ingest app from the environment."""
    settings = IngestSettings()
    configure_logging("ingest", level=settings.runtime.log_level, fmt=settings.runtime.log_format)
    try:
        check_kafka_secrets(settings.kafka, settings.runtime)
        key = hash_key(settings)
        keys = KeyStore.for_runtime(settings.runtime, settings.api_keys_file)
        ner = resolve_ner_model(settings.ner_model)
    except (SettingsError, ValueError) as exc:
        raise SystemExit(f"ingest: {exc}") from None
    if ner is None:
        log.info(
            "PII: patterns only, person names are not redacted (INGEST_NER_MODEL=%s; "
            "pip install 'raftloop-ingest[ner]' adds a spaCy NER model)",
            settings.ner_model,
        )
    else:
        log.info("PII: patterns and person names from the spaCy model %s", ner)
    redactor = Redactor(
        hash_key=key, threshold=settings.pii_score_threshold, analyzer=build_analyzer(ner)
    )
    return create_app(settings, store=build_store(settings), scrubbers=redactor, keys=keys)
