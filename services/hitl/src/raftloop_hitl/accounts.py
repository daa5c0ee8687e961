"""Reviewer and admin accounts: scrypt password hashes, per-tenant users."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from raftloop_hitl.domain import ROLES
from raftloop_hitl.models import User
from raftloop_hitl.policies import add_audit

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44


def hash_password(password: str) -> str:
    """A salted scrypt hash in `scrypt$n$r$p$salt$hash` form."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (constant-time comparison)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
        )
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


@dataclass(frozen=True)
class Account:
    """A signed-in user as the routes see them."""

    id: int
    username: str
    role: str
    tenant: str
    active: bool
    epoch: int = 0


class AccountError(ValueError):
    """A bad account change; the message says what to fix."""


class Accounts:
    """User management on the hitl database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def authenticate(self, username: str, password: str) -> Account | None:
        """The account for these credentials, or None (same work done for unknown users)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(User).where(User.username == username)).first()
        stored = row.password_hash if row is not None else _DUMMY
        ok = verify_password(password, stored)
        if row is None or not ok or not row.active:
            return None
        return Account(row.id, row.username, row.role, row.tenant, row.active, row.session_epoch)

    def get(self, user_id: int) -> Account | None:
        """An active account by id."""
        with self.engine.connect() as conn:
            row = conn.execute(select(User).where(User.id == user_id)).first()
        if row is None or not row.active:
            return None
        return Account(row.id, row.username, row.role, row.tenant, row.active, row.session_epoch)

    def list(self, tenant: str) -> list[Account]:
        """Accounts of one tenant."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(User).where(User.tenant == tenant).order_by(User.username)
            ).all()
        return [Account(r.id, r.username, r.role, r.tenant, r.active) for r in rows]

    def create(
        self, username: str, password: str, role: str, tenant: str, *, actor: str = "system"
    ) -> Account:
        """Add an account.

        Raises:
            AccountError: bad role, short password, or the username is taken.
        """
        check_account(username, password, role)
        now = time.time()
        try:
            with self.engine.begin() as conn:
                new_id = conn.execute(
                    insert(User)
                    .values(
                        username=username,
                        password_hash=hash_password(password),
                        role=role,
                        tenant=tenant,
                        active=True,
                        created_at=now,
                    )
                    .returning(User.id)
                ).scalar_one()
                add_audit(conn, tenant, actor, "user.create", username, role, now)
        except IntegrityError as exc:
            raise AccountError(f"username {username!r} is taken; pick another") from exc
        return Account(new_id, username, role, tenant, True)

    def ensure(self, username: str, password: str, role: str, tenant: str) -> None:
        """Create the account unless it exists (dev and bootstrap accounts).

        Raises:
            AccountError: the account is invalid (it would never be created).
        """
        check_account(username, password, role)
        with self.engine.connect() as conn:
            exists = conn.execute(select(User.id).where(User.username == username)).first()
        if exists is None:
            try:
                self.create(username, password, role, tenant)
            except AccountError:
                return  # another process created it first (the account itself was checked)

    def update(
        self,
        tenant: str,
        user_id: int,
        *,
        actor: str,
        role: str | None = None,
        active: bool | None = None,
        password: str | None = None,
    ) -> bool:
        """Change a user's role, active flag or password; False when not in this tenant.

        Raises:
            AccountError: nothing to change, an unknown role or a weak password.
        """
        if role is None and active is None and not password:
            raise AccountError(
                f"nothing to change: send at least one of role ({' or '.join(ROLES)}), active "
                "(on to enable the account, off to disable it) or password"
            )
        values: dict[str, object] = {}
        if role is not None:
            if role not in ROLES:
                raise AccountError(f"role must be one of {', '.join(ROLES)}")
            values["role"] = role
        if active is not None:
            values["active"] = active
        if password:
            check_account("x", password, "reviewer")
            values["password_hash"] = hash_password(password)
        if password or role is not None or active is False:
            values["session_epoch"] = User.session_epoch + 1  # existing sessions end
        with self.engine.begin() as conn:
            done = conn.execute(
                update(User).where(User.id == user_id, User.tenant == tenant).values(**values)
            )
            if done.rowcount != 1:
                return False
            shown = ("password_hash", "session_epoch")
            detail = ",".join(f"{k}={v}" for k, v in values.items() if k not in shown)
            detail += ",password=changed" if password else ""
            add_audit(conn, tenant, actor, "user.update", f"user:{user_id}", detail, time.time())
        return True

    def end_sessions(self, tenant: str, user_id: int, *, actor: str | None = None) -> bool:
        """Sign a user out everywhere: every cookie issued before now stops working.

        With an `actor` (an admin revoking) the audit log records it. False when the user is
        not in this tenant.
        """
        with self.engine.begin() as conn:
            done = conn.execute(
                update(User)
                .where(User.id == user_id, User.tenant == tenant)
                .values(session_epoch=User.session_epoch + 1)
            )
            if done.rowcount != 1:
                return False
            if actor is not None:
                target = f"user:{user_id}"
                add_audit(conn, tenant, actor, "user.revoke_sessions", target, "", time.time())
        return True


WEAK_DISTINCT_CHARS = 8
"""A production password with fewer distinct characters is refused as guessable."""


def is_guessable(username: str, password: str) -> bool:
    """Whether a password contains its username or repeats a few characters.

    Production refuses such a password for the bootstrap admin and for `raftloop hitl add-user`.
    """
    return username.lower() in password.lower() or len(set(password)) < WEAK_DISTINCT_CHARS


def check_account(username: str, password: str, role: str) -> None:
    """Refuse a bad role, username or password.

    Raises:
        AccountError: what to fix.
    """
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if (
        not username
        or len(username) > 64
        or not username.replace("-", "").replace("_", "").replace(".", "").isalnum()
    ):
        raise AccountError("username must be 1-64 letters, digits, '.', '-' or '_'")
    if len(password) < 12:
        raise AccountError("password must have at least 12 characters")
