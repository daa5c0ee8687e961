"""Failpoints: off unless armed, fire once with SIGKILL, refused in production."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from raftloop_core import faults
from raftloop_core.settings import RuntimeSettings

SCRIPT = """
from raftloop_core.faults import crash_point
crash_point("svc.after_write")
print("passed the point")
"""


def run_point(env_dir: Path | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"}
    if env_dir is not None:
        env[faults.ENV] = str(env_dir)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )


def test_an_unarmed_point_does_nothing(tmp_path: Path) -> None:
    assert run_point(None).stdout.strip() == "passed the point"
    assert run_point(tmp_path).stdout.strip() == "passed the point"  # folder set, no file


def test_an_armed_point_kills_the_process_once(tmp_path: Path) -> None:
    trigger = tmp_path / "svc.after_write"
    trigger.touch()
    killed = run_point(tmp_path)
    assert killed.returncode == -signal.SIGKILL
    assert "passed the point" not in killed.stdout
    assert not trigger.exists()  # disarmed: the restarted process passes
    assert run_point(tmp_path).returncode == 0


def test_another_points_file_does_not_arm_this_one(tmp_path: Path) -> None:
    (tmp_path / "other.after_write").touch()
    assert run_point(tmp_path).returncode == 0


def test_production_refuses_failpoints(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="RAFTLOOP_FAILPOINTS_DIR"):
        RuntimeSettings(mode="production", failpoints_dir=tmp_path)
    assert RuntimeSettings(mode="development", failpoints_dir=tmp_path).failpoints_dir == tmp_path
