"""The composition root: development defaults, production refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI

from raftloop_hitl.main import build


def test_builds_with_no_settings_in_development(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAFTLOOP_DATA_DIR", str(tmp_path))
    app = build()
    assert isinstance(app, FastAPI)
    assert (tmp_path / "credentials.json").exists()
    assert (tmp_path / "hitl").is_dir()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "HITL_SESSION_SECRET"),
        ({"HITL_SESSION_SECRET": "dev-abcdefghijklmnopqrstuvwxyz"}, "development or too-short"),
        ({"HITL_SESSION_SECRET": "s" * 32}, "RAFTLOOP_API_KEYS_FILE"),
        (
            {"HITL_SESSION_SECRET": "s" * 32, "HITL_ADMIN_USERNAME": "root"},
            "HITL_ADMIN_PASSWORD",
        ),
    ],
)
def test_production_refuses_to_start_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    monkeypatch.setenv("RAFTLOOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAFTLOOP_MODE", "production")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=message):
        build()
    assert not (tmp_path / "credentials.json").exists()
