"""Sessions (#17): logout and admins revoke server-side; sign-in throttling slows floods.

Two tenants, acme and globex, on the real app over HTTP (httpx's ASGI transport, which also
sets the client address), on SQLite and on PostgreSQL. Time is a fake clock handed to
`create_app`, so an hour of flooding takes a second.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from raftloop_core.api import KeyStore
from raftloop_core.messaging import make_broker
from raftloop_core.settings import KafkaSettings
from raftloop_hitl.app import create_app
from raftloop_hitl.main import session_secret
from raftloop_hitl.throttle import SignInThrottle

from ..support import csrf_of, prefixed_topics, settings_for, sign_in

pytestmark = pytest.mark.integration

PASSWORDS = {
    "acme-admin": "acme-admin-password-1",
    "acme-reviewer": "acme-reviewer-password-1",
    "globex-admin": "globex-admin-password-1",
}
REAL_USER = "198.51.100.7"
ATTACKER = "203.0.113.66"


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Tenants:
    app: FastAPI
    clock: FakeClock
    ids: dict[str, int]

    def client(self, address: str = REAL_USER) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://hitl")


@pytest.fixture
async def tenants(
    tmp_path: Path, kafka_settings: KafkaSettings, engine: Engine
) -> AsyncIterator[Tenants]:
    settings = settings_for(tmp_path, kafka_settings, prefixed_topics(kafka_settings))
    clock = FakeClock()
    app = create_app(
        settings,
        engine=engine,
        broker=make_broker(settings.kafka),
        keys=KeyStore.for_runtime(settings.runtime, None),
        session_secret=session_secret(settings),
        clock=clock,
    )
    async with app.router.lifespan_context(app):
        accounts = app.state.ctx.accounts
        ids = {}
        for name, password in PASSWORDS.items():
            tenant, role = name.split("-")
            ids[name] = accounts.create(name, password, role, tenant).id
        yield Tenants(app, clock, ids)


async def attempt(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    token = csrf_of((await client.get("/login")).text)
    form = {"username": username, "password": password, "csrf_token": token}
    return await client.post("/login", data=form)


def retry_after(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text[:300]
    assert "retry-after" in response.headers, "a 429 must say when to come back"
    return int(response.headers["retry-after"])


# -- logout and revocation ------------------------------------------------------------------


async def test_a_copied_cookie_stops_working_after_logout(tenants: Tenants) -> None:
    async with tenants.client() as browser, tenants.client(ATTACKER) as thief:
        csrf = await sign_in(browser, "acme-reviewer", PASSWORDS["acme-reviewer"])
        thief.cookies.update(browser.cookies)  # the signed cookie, copied
        assert (await thief.get("/queue")).status_code == 200

        out = await browser.post("/logout", data={"csrf_token": csrf})
        assert out.status_code == 303

        assert (await thief.get("/queue")).status_code == 401
        assert (await thief.get("/api/v1/queue")).status_code == 401
        # Signing in again works, and the new session is good.
        await sign_in(browser, "acme-reviewer", PASSWORDS["acme-reviewer"])
        assert (await browser.get("/queue")).status_code == 200
        assert (await thief.get("/queue")).status_code == 401


async def test_an_admin_revokes_a_users_sessions_in_their_own_tenant_only(
    tenants: Tenants,
) -> None:
    target = tenants.ids["acme-reviewer"]
    path = f"/admin/users/{target}/revoke-sessions"
    async with (
        tenants.client() as laptop,
        tenants.client("198.51.100.8") as phone,
        tenants.client("192.0.2.10") as globex,
        tenants.client("192.0.2.11") as acme,
    ):
        await sign_in(laptop, "acme-reviewer", PASSWORDS["acme-reviewer"])
        await sign_in(phone, "acme-reviewer", PASSWORDS["acme-reviewer"])
        globex_csrf = await sign_in(globex, "globex-admin", PASSWORDS["globex-admin"])
        acme_csrf = await sign_in(acme, "acme-admin", PASSWORDS["acme-admin"])

        # globex's admin cannot see or touch acme's user: the same answer as no such user.
        refused = await globex.post(path, data={"csrf_token": globex_csrf})
        assert refused.status_code == 404, refused.text[:300]
        assert (await laptop.get("/queue")).status_code == 200
        assert (await phone.get("/queue")).status_code == 200
        # The reviewer cannot revoke anyone; a missing CSRF token is refused.
        reviewer_csrf = csrf_of((await laptop.get("/queue")).text)
        own = await laptop.post(path, data={"csrf_token": reviewer_csrf})
        assert own.status_code == 403
        assert (await acme.post(path, data={})).status_code == 403

        done = await acme.post(path, data={"csrf_token": acme_csrf})
        assert done.status_code == 303, done.text[:300]
        assert (await laptop.get("/queue")).status_code == 401
        assert (await phone.get("/queue")).status_code == 401
        assert (await acme.get("/queue")).status_code == 200  # only the target signed out
        assert (await globex.get("/queue")).status_code == 200

        audit = await acme.get("/admin/audit")
        assert "user.revoke_sessions" in audit.text
        assert "user.revoke_sessions" not in (await globex.get("/admin/audit")).text
        users = await acme.get("/admin/users")
        assert f'action="{path}"' in users.text  # the button on the users page

        await sign_in(laptop, "acme-reviewer", PASSWORDS["acme-reviewer"])
        assert (await laptop.get("/queue")).status_code == 200


# -- sign-in throttling ---------------------------------------------------------------------


async def flood(
    tenants: Tenants, usernames: list[str], addresses: list[str], seconds: float
) -> tuple[int, list[int]]:
    """Wrong passwords as fast as the service allows for `seconds`; (guesses, waits)."""
    guesses, waits, turn = 0, [], 0
    clients = {a: tenants.client(a) for a in addresses}
    try:
        end = tenants.clock.now + seconds
        while tenants.clock.now < end:
            client = clients[addresses[turn % len(addresses)]]
            got = await attempt(client, usernames[turn % len(usernames)], "not-the-password")
            turn += 1
            if got.status_code == 401:
                guesses += 1
                continue
            wait = retry_after(got)
            waits.append(wait)
            tenants.clock.advance(wait)
    finally:
        for client in clients.values():
            await client.aclose()
    return guesses, waits


async def test_a_wrong_password_flood_does_not_lock_the_real_user_out(tenants: Tenants) -> None:
    async with tenants.client(ATTACKER) as attacker:
        first = [await attempt(attacker, "acme-admin", "wrong-wrong-wrong") for _ in range(6)]
    assert [r.status_code for r in first] == [401] * 5 + [429]
    retry_after(first[-1])

    # The real admin, from their own address, right away: at most the account's short delay.
    async with tenants.client(REAL_USER) as real:
        got = await attempt(real, "acme-admin", PASSWORDS["acme-admin"])
        if got.status_code == 429:
            wait = retry_after(got)
            assert wait <= 30
            tenants.clock.advance(wait)
            got = await attempt(real, "acme-admin", PASSWORDS["acme-admin"])
        assert got.status_code == 303, got.text[:300]

    # An hour of flooding from one address: the delays grow to the address cap.
    guesses, waits = await flood(tenants, ["acme-admin"], [ATTACKER], 3600)
    assert guesses <= 15, guesses
    assert max(waits) >= 600, waits
    async with tenants.client(REAL_USER) as real:
        got = await attempt(real, "acme-admin", PASSWORDS["acme-admin"])
        assert got.status_code == 303, got.text[:300]


async def test_a_flood_from_many_addresses_is_slowed_per_account(tenants: Tenants) -> None:
    addresses = [f"203.0.113.{i}" for i in range(1, 200)]
    guesses, waits = await flood(tenants, ["acme-admin"], addresses, 3600)
    assert guesses <= 5 + 3600 / 30 + 10, guesses  # about one guess per 30 s, not 200 a second
    assert max(waits) <= 30, waits
    async with tenants.client(REAL_USER) as real:
        got = await attempt(real, "acme-admin", PASSWORDS["acme-admin"])
        if got.status_code == 429:
            tenants.clock.advance(retry_after(got))
            got = await attempt(real, "acme-admin", PASSWORDS["acme-admin"])
        assert got.status_code == 303, got.text[:300]


async def test_spraying_usernames_from_one_address_is_throttled(tenants: Tenants) -> None:
    names = [f"user-{i}" for i in range(50)] + ["acme-admin", "globex-admin"]
    async with tenants.client(ATTACKER) as sprayer:
        codes = [(await attempt(sprayer, name, "Summer2026!")).status_code for name in names[:6]]
    assert codes == [401] * 5 + [429]

    guesses, waits = await flood(tenants, names, [ATTACKER], 3600)
    assert guesses <= 15, guesses
    assert max(waits) >= 600, waits
    # Other addresses and the sprayed accounts are not slowed by it.
    async with tenants.client(REAL_USER) as real:
        got = await attempt(real, "globex-admin", PASSWORDS["globex-admin"])
        assert got.status_code == 303, got.text[:300]


async def test_parallel_guesses_past_the_free_ones_get_one_admission(tenants: Tenants) -> None:
    throttle: SignInThrottle = tenants.app.state.ctx.throttle
    for _ in range(5):
        assert throttle.admit(ATTACKER, "acme-admin") == 0
    tenants.clock.advance(1.0)  # the first delay is over: exactly one more guess
    with ThreadPoolExecutor(8) as pool:
        waits = list(pool.map(lambda _: throttle.admit(ATTACKER, "acme-admin"), range(16)))
    assert sum(w == 0 for w in waits) == 1, waits
