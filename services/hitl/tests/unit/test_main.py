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


GOOD = "s" * 32


@pytest.mark.parametrize(
    ("mode", "password", "message"),
    [
        ("production", "short-pass", "HITL_ADMIN_PASSWORD to a random secret of at least 16"),
        ("production", "dev-" + "x" * 24, "development or too-short"),
        ("production", "root-" + "Ab3$" * 4, "contains the username"),
        ("production", "abababababababababab", "repeats a few characters"),
        ("development", "short", "at least 12 characters"),
    ],
)
def test_a_weak_bootstrap_admin_password_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, password: str, message: str
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text("[]")
    env = {
        "RAFTLOOP_DATA_DIR": str(tmp_path),
        "RAFTLOOP_MODE": mode,
        "RAFTLOOP_API_KEYS_FILE": str(keys),
        "HITL_SESSION_SECRET": GOOD,
        "HITL_ADMIN_USERNAME": "root",
        "HITL_ADMIN_PASSWORD": password,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=message) as refused:
        build()
    assert str(refused.value).startswith("hitl: ")
    assert "\n" not in str(refused.value)


def test_an_admin_password_without_a_username_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAFTLOOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HITL_ADMIN_PASSWORD", "a-good-long-password-1")
    with pytest.raises(SystemExit, match="HITL_ADMIN_USERNAME is not"):
        build()


def test_a_strong_bootstrap_admin_starts_in_production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text("[]")
    monkeypatch.setenv("RAFTLOOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAFTLOOP_MODE", "production")
    monkeypatch.setenv("RAFTLOOP_API_KEYS_FILE", str(keys))
    monkeypatch.setenv("HITL_SESSION_SECRET", GOOD)
    monkeypatch.setenv("HITL_ADMIN_USERNAME", "root")
    monkeypatch.setenv("HITL_ADMIN_PASSWORD", "q8Fz-2mWx_7TtLp0aRv")
    assert isinstance(build(), FastAPI)
