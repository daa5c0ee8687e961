"""Where the deploy checks find their validators, and what each test needs from the repo.

Every validator is an external tool from Debian's or PyPI's packages (deploy/install-validators.sh
installs them). A test whose tool is missing is skipped with the install command in its reason;
nothing is faked.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # ships no type information

from raftloop_core.testing import missing

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SERVICES = {
    "gateway": 8000,
    "rag": 8001,
    "ingest": 8002,
    "judge": 8003,
    "trainer": 8004,
    "hitl": 8080,
}
TORCH_SERVICES = {"gateway", "rag", "trainer", "judge"}
"""judge too: its pyproject needs sentence-transformers (near-duplicate check), hence torch."""

INSTALL = {
    "docker-compose": "apt-get install -y docker-compose",
    "promtool": "apt-get install -y prometheus",
    "kubectl": "kubectl (its built-in kustomize renders the overlays)",
}


VERSION_ARGS = {
    "docker-compose": ("version", "--short"),
    "promtool": ("--version",),
    "kubectl": ("version", "--client"),
}
USED: dict[str, str] = {}
"""Validators the session ran, with their versions: printed in pytest's terminal summary."""


def tool(name: str) -> str:
    """The path of a command-line validator; without it, skip (fail in CI) saying how to get it."""
    path = shutil.which(name)
    if path is None:
        missing(name, f"install it ({INSTALL.get(name, name)}); see deploy/README.md")
        raise AssertionError("unreachable")
    if name not in USED:
        out = run(path, *VERSION_ARGS.get(name, ("--version",)))
        first = (out.stdout or out.stderr).strip().splitlines()
        USED[name] = f"{path}: {' | '.join(first[:2])}"
    return path


def used(name: str, version: str) -> None:
    """Record a validator that is a Python package rather than a command."""
    USED[name] = version


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a validator and capture its output (never raises on a non-zero exit)."""
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _uncommented(path: Path) -> str:
    return "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
    )


def compose_variables() -> set[str]:
    """Every `${VAR...}` that compose.yaml interpolates."""
    return set(re.findall(r"\$\{([A-Z0-9_]+)", _uncommented(COMPOSE)))


def required_variables() -> set[str]:
    """The variables compose refuses to run without (`${VAR:?message}`)."""
    return set(re.findall(r"\$\{([A-Z0-9_]+):\?", _uncommented(COMPOSE)))


def write_test_env(folder: Path) -> Path:
    """An env file with a fresh random value for every required secret, an empty keys file and
    a metrics key file."""
    keys = folder / "api-keys.json"
    keys.write_text("[]")
    metrics_key = folder / "metrics-key"
    metrics_key.write_text(secrets.token_urlsafe(24))
    files = {"RAFTLOOP_API_KEYS_HOST_FILE": keys, "RAFTLOOP_METRICS_KEY_HOST_FILE": metrics_key}
    lines = []
    for name in sorted(required_variables()):
        value = str(files[name]) if name in files else secrets.token_urlsafe(24)
        lines.append(f"{name}={value}")
    env = folder / "test.env"
    env.write_text("\n".join(lines) + "\n")
    return env


def render_compose(env_file: Path) -> dict[str, Any]:
    """`docker-compose config` of deploy/compose.yaml with `env_file`, parsed."""
    exe = tool("docker-compose")
    done = run(exe, "-f", str(COMPOSE), "--env-file", str(env_file), "config")
    assert done.returncode == 0, done.stderr
    rendered: dict[str, Any] = yaml.safe_load(done.stdout)
    return rendered
