"""Sign-in throttling per client address and per account, kept in the database (#17).

Every admitted attempt is charged as a failure before the password is checked, in the same
transaction that checked the delays, so a burst of parallel guesses gets one admission, not one
each; a good password refunds the charge. Keeping the counts in the database makes replicas
share them and a restart keep them.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from raftloop_hitl.domain import Backoff
from raftloop_hitl.models import SignInFailures

SWEEP_EVERY_S = 60.0


def address_key(host: str | None) -> str:
    """The throttling key of a client address: an IPv6 client counts as its whole /64."""
    if not host:
        return "a:unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"a:{host[:100]}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"a:{ip.ipv4_mapped}"
        return f"a:{ipaddress.IPv6Network((ip, 64), strict=False)}"
    return f"a:{ip}"


def account_key(username: str) -> str:
    """The throttling key of a username (usernames are at most 64 characters)."""
    return f"u:{username[:100]}"


class SignInThrottle:
    """Growing delays after failed sign-ins, per client address and per account."""

    def __init__(
        self,
        engine: Engine,
        *,
        address: Backoff,
        account: Backoff,
        forget_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.address = address
        self.account = account
        self.forget_s = forget_s
        self.clock = clock
        self.postgres = engine.dialect.name == "postgresql"
        self._swept = 0.0

    def admit(self, host: str | None, username: str) -> float:
        """0 admits an attempt (charged as a failure until `succeeded`); else seconds to wait."""
        now = self.clock()
        rules = {address_key(host): self.address, account_key(username): self.account}
        insert = postgresql.insert if self.postgres else sqlite.insert
        with self.engine.begin() as conn:
            # Sorted, so that two attempts lock the same rows in the same order (no deadlock).
            keys = sorted(rules)
            for key in keys:
                conn.execute(
                    insert(SignInFailures)
                    .values(key=key, failures=0, last_at=now)
                    .on_conflict_do_nothing(index_elements=["key"])
                )
            query = select(SignInFailures).where(SignInFailures.key.in_(keys))
            query = query.order_by(SignInFailures.key)
            rows = conn.execute(query.with_for_update() if self.postgres else query).all()
            seen = {r.key: (r.failures if now - r.last_at < self.forget_s else 0, r) for r in rows}
            wait = max(
                (row.last_at + rules[key].delay(n) - now for key, (n, row) in seen.items()),
                default=0.0,
            )
            if wait > 0:
                return wait
            for key in keys:
                failures = seen[key][0] + 1 if key in seen else 1
                conn.execute(
                    insert(SignInFailures)
                    .values(key=key, failures=failures, last_at=now)
                    .on_conflict_do_update(
                        index_elements=["key"], set_={"failures": failures, "last_at": now}
                    )
                )
        self._sweep(now)
        return 0.0

    def succeeded(self, host: str | None, username: str) -> None:
        """Refund the charge of an attempt whose password was right."""
        keys = [address_key(host), account_key(username)]
        with self.engine.begin() as conn:
            conn.execute(
                update(SignInFailures)
                .where(SignInFailures.key.in_(keys), SignInFailures.failures > 0)
                .values(failures=SignInFailures.failures - 1)
            )

    def _sweep(self, now: float) -> None:
        """Forget keys with no attempt for `forget_s` (at most once a minute per process)."""
        if now - self._swept < SWEEP_EVERY_S:
            return
        self._swept = now
        old = select(SignInFailures.key).where(SignInFailures.last_at < now - self.forget_s)
        old = old.limit(1000)
        if self.postgres:  # never wait for rows an attempt holds
            old = old.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            conn.execute(delete(SignInFailures).where(SignInFailures.key.in_(old)))
