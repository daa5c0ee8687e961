"""Fixtures of rag's tests: one embedding model per session, test API keys, unique names."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from raftloop_core.api import KeyStore
from raftloop_rag.adapters import SentenceTransformerEmbedder
from raftloop_rag.settings import RagSettings
from raftloop_rag.testing import sample_keys


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2 from its wheel, loaded once per session."""
    return SentenceTransformerEmbedder(RagSettings().model_path())


@pytest.fixture(scope="session")
def keys() -> KeyStore:
    """A client key for each of two tenants, plus internal and admin keys."""
    return sample_keys()


@pytest.fixture(scope="module")
def module_unique() -> Callable[[str], str]:
    """Unique names for module-scoped fixtures."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"
