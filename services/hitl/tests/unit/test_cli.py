"""`raftloop hitl add-user`: a new tenant's first admin from the command line (issue #17)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from raftloop_hitl.accounts import Accounts
from raftloop_hitl.cli import register
from raftloop_hitl.db import make_engine

STRONG = "Vq7-zR2p!Lm9xK4t_wE8"


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def main() -> None:
        """Root."""

    register(root)
    return root


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAFTLOOP_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("HITL_USER_PASSWORD", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return tmp_path / "var"


def _accounts(data_dir: Path) -> Accounts:
    return Accounts(make_engine(f"sqlite:///{data_dir / 'hitl' / 'hitl.sqlite3'}"))


def test_adds_a_new_tenants_first_admin_from_stdin(app: typer.Typer, data_dir: Path) -> None:
    args = ["hitl", "add-user", "--tenant", "globex", "--role", "admin", "--username", "gx-ops"]
    done = CliRunner().invoke(app, [*args, "--password-stdin"], input=STRONG + "\n")
    assert done.exit_code == 0, done.output
    assert "added admin 'gx-ops' of tenant 'globex'" in done.output
    assert STRONG not in done.output
    account = _accounts(data_dir).authenticate("gx-ops", STRONG)
    assert account is not None
    assert (account.role, account.tenant) == ("admin", "globex")


def test_reads_the_password_from_the_environment(
    app: typer.Typer, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HITL_USER_PASSWORD", STRONG)
    args = ["hitl", "add-user", "--tenant", "acme", "--username", "rev1"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    account = _accounts(data_dir).authenticate("rev1", STRONG)
    assert account is not None
    assert (account.role, account.tenant) == ("reviewer", "acme")


def test_a_password_is_never_an_argument(app: typer.Typer, data_dir: Path) -> None:
    args = ["hitl", "add-user", "--tenant", "acme", "--username", "a", "--password", STRONG]
    done = CliRunner().invoke(app, args)
    assert done.exit_code != 0
    assert not (data_dir / "hitl" / "hitl.sqlite3").exists()


@pytest.mark.usefixtures("data_dir")
def test_no_password_source_is_a_clear_error(app: typer.Typer) -> None:
    done = CliRunner().invoke(app, ["hitl", "add-user", "--tenant", "acme", "--username", "a"])
    assert done.exit_code == 2
    assert "--password-stdin or set HITL_USER_PASSWORD" in done.output


@pytest.mark.parametrize(
    ("mode", "password", "message"),
    [
        ("production", "short-but-12c", "at least 16 characters"),
        ("production", "dev-" + "x" * 24, "development or too-short"),
        ("production", "gx-ops-" + "Ab3$" * 4, "contains the username"),
        ("production", "abababababababababab", "repeats a few characters"),
        ("development", "short", "at least 12 characters"),
    ],
)
def test_a_weak_password_is_refused_with_one_line(
    app: typer.Typer,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    password: str,
    message: str,
) -> None:
    monkeypatch.setenv("RAFTLOOP_MODE", mode)
    args = ["hitl", "add-user", "--tenant", "globex", "--role", "admin", "--username", "gx-ops"]
    done = CliRunner().invoke(app, [*args, "--password-stdin"], input=password + "\n")
    assert done.exit_code == 2, done.output
    assert message in done.output
    assert not (data_dir / "hitl" / "hitl.sqlite3").exists()


@pytest.mark.usefixtures("data_dir")
def test_a_taken_username_or_bad_tenant_is_refused(app: typer.Typer) -> None:
    cli = CliRunner()
    args = ["hitl", "add-user", "--tenant", "acme", "--username", "ops", "--password-stdin"]
    assert cli.invoke(app, args, input=STRONG + "\n").exit_code == 0
    again = cli.invoke(app, args, input=STRONG + "\n")
    assert again.exit_code == 2
    assert "username 'ops' is taken" in again.output
    bad = ["hitl", "add-user", "--tenant", "Not A Tenant", "--username", "x", "--password-stdin"]
    refused = cli.invoke(app, bad, input=STRONG + "\n")
    assert refused.exit_code == 2
    assert "is not a slug" in refused.output
