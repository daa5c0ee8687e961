"""`raftloop hitl add-user`: review-UI accounts from the command line.

An operator who adds a tenant needs its first admin before anyone can sign in to add the rest
in `/admin/users` (issue #17). The password never travels as an argument (it would sit in the
shell history and in `ps`): it comes from stdin (`--password-stdin`), from `HITL_USER_PASSWORD`,
or from a hidden prompt.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
from typing import Annotated

import typer
from pydantic import SecretStr

from raftloop_core.events import TENANT_PATTERN
from raftloop_core.settings import MIN_SECRET_CHARS, SettingsError, check_secret
from raftloop_hitl.accounts import AccountError, Accounts, check_account, is_guessable
from raftloop_hitl.db import make_engine, migrate
from raftloop_hitl.domain import ROLES
from raftloop_hitl.settings import HitlSettings

PASSWORD_ENV = "HITL_USER_PASSWORD"


def _fail(message: str) -> typer.Exit:
    typer.echo(f"raftloop: error: {message}", err=True)
    return typer.Exit(2)


def _password(from_stdin: bool) -> str:
    """The new account's password: stdin, the environment, or a hidden prompt (twice)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise _fail(
            f"no password: pipe it with --password-stdin or set {PASSWORD_ENV} "
            "(never pass it as an argument)"
        )
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise _fail("the two passwords differ; run the command again")
    return first


def check_password(username: str, password: str, role: str, settings: HitlSettings) -> None:
    """Refuse an invalid account, and in production a password an attacker could guess.

    Production holds a person's password to the rules of the bootstrap admin's
    (`HITL_ADMIN_PASSWORD`): at least MIN_SECRET_CHARS characters, no development value, not
    containing the username, not a few characters repeated.

    Raises:
        AccountError: what to fix.
    """
    check_account(username, password, role)
    if not settings.runtime.production:
        return
    try:
        check_secret(
            SecretStr(password), name="the password", env=PASSWORD_ENV, runtime=settings.runtime
        )
    except SettingsError as exc:
        raise AccountError(str(exc)) from None
    if is_guessable(username, password):
        raise AccountError(
            "the password is weak (it contains the username or repeats a few characters); "
            f"production needs a random one of at least {MIN_SECRET_CHARS} characters, e.g. "
            "from `python -c 'import secrets; print(secrets.token_urlsafe())'`"
        )


def add_user(
    username: Annotated[
        str, typer.Option("--username", help="Sign-in name (letters, digits, .-_).")
    ],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant the account reviews for.")],
    role: Annotated[str, typer.Option("--role", help=f"One of {', '.join(ROLES)}.")] = "reviewer",
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help=f"Read the password from stdin's first line (else ${PASSWORD_ENV}, a prompt).",
        ),
    ] = False,
) -> None:
    """Add a review-UI account, e.g. a new tenant's first admin, to hitl's database.

    Works with hitl running or not (the database is migrated first).
    The admin then adds the tenant's reviewers under /admin/users.
    """
    if not re.fullmatch(TENANT_PATTERN, tenant):
        raise _fail(f"tenant {tenant!r} is not a slug (lowercase letters, digits, '-', '_')")
    settings = HitlSettings()
    password = _password(password_stdin)
    try:
        check_password(username, password, role, settings)
    except AccountError as exc:
        raise _fail(str(exc)) from None
    engine = make_engine(settings.database_url())
    try:
        migrate(engine)
        accounts = Accounts(engine)
        actor = f"cli:{getpass.getuser()}"
        account = accounts.create(username, password, role, tenant, actor=actor)
    except AccountError as exc:
        raise _fail(str(exc)) from None
    finally:
        engine.dispose()
    typer.echo(
        f"added {account.role} {account.username!r} of tenant {account.tenant!r} (user id "
        f"{account.id}); sign in at http://127.0.0.1:{settings.port}/login"
    )


def register(app: typer.Typer) -> None:
    """Add the `hitl` command group to the root `raftloop` program."""
    hitl = typer.Typer(help="Review-UI accounts.", no_args_is_help=True)
    hitl.command("add-user")(add_user)
    app.add_typer(hitl, name="hitl")
