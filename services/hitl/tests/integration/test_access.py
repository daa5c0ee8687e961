"""Every route x {anonymous, reviewer, admin, other tenant}; CSRF; escaping of model output."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from raftloop_core.api import KeyStore
from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.messaging import make_broker
from raftloop_core.settings import KafkaSettings
from raftloop_hitl.app import create_app
from raftloop_hitl.db import make_engine
from raftloop_hitl.main import session_secret

from ..conftest import judged
from ..support import csrf_of, prefixed_topics, settings_for, sign_in

pytestmark = pytest.mark.integration

XSS = '<script>alert("pwned")</script>'


@dataclass
class World:
    app: FastAPI
    clients: dict[str, httpx.AsyncClient]
    csrf: dict[str, str]
    item_id: int
    other_item_id: int
    other_user_id: int
    keys: dict[str, str]


@pytest.fixture(scope="module")
async def world(
    tmp_path_factory: pytest.TempPathFactory, kafka_settings: KafkaSettings
) -> AsyncIterator[World]:
    data = tmp_path_factory.mktemp("hitl-access")
    settings = settings_for(data, kafka_settings, prefixed_topics(kafka_settings))
    app = create_app(
        settings,
        engine=make_engine(settings.database_url()),
        broker=make_broker(settings.kafka),
        keys=KeyStore.for_runtime(settings.runtime, None),
        session_secret=session_secret(settings),
    )
    creds = ensure_dev_credentials(settings.runtime)
    async with app.router.lifespan_context(app):
        ctx = app.state.ctx
        ctx.accounts.create("acme-admin", "acme-password-123", "admin", "acme")
        other_user = ctx.accounts.list("acme")[0].id
        ctx.store.ingest_judged(judged(p=0.2, answer=XSS))
        ctx.store.ingest_judged(judged(p=0.2, tenant="acme"))
        item_id = ctx.store.queue("default")[0].id
        other_item = ctx.store.queue("acme")[0].id
        transport = httpx.ASGITransport(app=app)
        clients = {
            who: httpx.AsyncClient(transport=transport, base_url="http://hitl")
            for who in ("anonymous", "reviewer", "admin", "other")
        }
        passwords = {a.username: a.password for a in creds.accounts}
        csrf = {
            "reviewer": await sign_in(clients["reviewer"], "reviewer", passwords["reviewer"]),
            "admin": await sign_in(clients["admin"], "admin", passwords["admin"]),
            "other": await sign_in(clients["other"], "acme-admin", "acme-password-123"),
            "anonymous": "",
        }
        yield World(app, clients, csrf, item_id, other_item, other_user, creds.api_keys)
        for client in clients.values():
            await client.aclose()


# (method, path, expected status for anonymous, reviewer, admin, other-tenant admin)
GETS = [
    ("/queue", 401, 200, 200, 200),
    ("/items/{item}", 401, 200, 200, 404),
    ("/items/{other_item}", 401, 404, 404, 200),
    ("/items/999999", 401, 404, 404, 404),
    ("/guidelines", 401, 200, 200, 200),
    ("/stats", 401, 200, 200, 200),
    ("/admin/users", 401, 403, 200, 200),
    ("/admin/routing", 401, 403, 200, 200),
    ("/admin/agreement", 401, 403, 200, 200),
    ("/admin/audit", 401, 403, 200, 200),
    ("/ops", 401, 403, 200, 200),
    ("/ops.json", 401, 403, 200, 200),
    ("/api/v1/queue", 401, 200, 200, 200),
    ("/api/v1/items/{item}", 401, 200, 200, 404),
    ("/api/v1/items/{other_item}", 401, 404, 404, 200),
]
WHO = ("anonymous", "reviewer", "admin", "other")


def fill(path: str, w: World) -> str:
    return path.format(item=w.item_id, other_item=w.other_item_id, other_user=w.other_user_id)


@pytest.mark.parametrize(("path", "anon", "reviewer", "admin", "other"), GETS)
async def test_get_routes(
    world: World, path: str, anon: int, reviewer: int, admin: int, other: int
) -> None:
    expected = dict(zip(WHO, (anon, reviewer, admin, other), strict=True))
    for who in WHO:
        got = await world.clients[who].get(fill(path, world))
        assert got.status_code == expected[who], (who, path, got.text[:200])


POSTS = [
    # (path, form, anonymous, reviewer, admin, other-tenant admin)
    (
        "/admin/users",
        {"username": "x", "password": "short", "role": "reviewer"},
        401,
        403,
        400,
        400,
    ),
    ("/admin/users/{other_user}", {"active": "on"}, 401, 403, 404, 303),
    ("/admin/routing", {"review_below": "0.8"}, 401, 403, 303, 303),
    ("/admin/guidelines", {"text": "Be kind."}, 401, 403, 303, 303),
    ("/items/{other_item}/review", {"action": "approve", "lease_token": "x"}, 401, 404, 404, 409),
    ("/items/{item}/review", {"action": "approve", "lease_token": "x"}, 401, 409, 409, 404),
    ("/queue/claim", {}, 401, 303, 303, 303),
]

API_POSTS = [
    # (path, json body, anonymous, reviewer, admin, other-tenant admin)
    (
        "/api/v1/items/{item}/reviews",
        {"action": "approved", "lease_token": "x"},
        401,
        409,
        409,
        404,
    ),
    (
        "/api/v1/items/{other_item}/reviews",
        {"action": "approved", "lease_token": "x"},
        401,
        404,
        404,
        409,
    ),
    ("/api/v1/items/{item}/reviews", {"action": "bogus", "lease_token": "x"}, 401, 400, 400, 400),
]


@pytest.mark.parametrize(("path", "body", "anon", "reviewer", "admin", "other"), API_POSTS)
async def test_api_posts(
    world: World, path: str, body: dict[str, str], anon: int, reviewer: int, admin: int, other: int
) -> None:
    expected = dict(zip(WHO, (anon, reviewer, admin, other), strict=True))
    for who in WHO:
        headers = {"x-csrf-token": world.csrf[who]}
        got = await world.clients[who].post(fill(path, world), json=body, headers=headers)
        assert got.status_code == expected[who], (who, path, got.text[:300])
        if got.status_code >= 400:
            assert set(got.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(("path", "form", "anon", "reviewer", "admin", "other"), POSTS)
async def test_post_routes(
    world: World, path: str, form: dict[str, str], anon: int, reviewer: int, admin: int, other: int
) -> None:
    expected = dict(zip(WHO, (anon, reviewer, admin, other), strict=True))
    for who in WHO:
        body = form | {"csrf_token": world.csrf[who]}
        got = await world.clients[who].post(fill(path, world), data=body)
        assert got.status_code == expected[who], (who, path, got.text[:300])


@pytest.mark.parametrize(
    "path",
    ["/queue/claim", "/admin/routing", "/admin/guidelines", "/items/{item}/review", "/logout"],
)
async def test_form_post_without_csrf_token_fails(world: World, path: str) -> None:
    for who in ("reviewer", "admin"):
        got = await world.clients[who].post(fill(path, world), data={"text": "x", "action": "skip"})
        assert got.status_code == 403, (who, path)
        assert "CSRF" in got.text
        wrong = await world.clients[who].post(fill(path, world), data={"csrf_token": "forged"})
        assert wrong.status_code == 403


async def test_login_without_csrf_token_fails(world: World) -> None:
    client = world.clients["anonymous"]
    got = await client.post("/login", data={"username": "reviewer", "password": "whatever"})
    assert got.status_code == 403


async def test_api_post_with_session_needs_csrf_header(world: World) -> None:
    client = world.clients["reviewer"]
    assert (await client.post("/api/v1/claims")).status_code == 403
    ok = await client.post("/api/v1/claims", headers={"x-csrf-token": world.csrf["reviewer"]})
    assert ok.status_code == 200
    lease = ok.json()["lease_token"]
    release = await client.post(
        "/queue/claim",
        data={
            "csrf_token": world.csrf["reviewer"],
            "release_item": ok.json()["item"]["id"],
            "release_token": lease,
        },
    )
    assert release.status_code == 303


async def test_api_keys_by_role(world: World) -> None:
    client = world.clients["anonymous"]
    for role, status in (("client", 403), ("internal", 200), ("admin", 200)):
        got = await client.get(
            "/api/v1/queue", headers={"authorization": f"Bearer {world.keys[role]}"}
        )
        assert got.status_code == status, role
    bad = await client.get("/api/v1/queue", headers={"authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert bad.json()["error"]["type"] == "authentication_error"


async def test_script_in_model_answer_is_shown_as_text(world: World) -> None:
    page = await world.clients["reviewer"].get(f"/items/{world.item_id}")
    assert page.status_code == 200
    assert XSS not in page.text
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_session_cookie_is_httponly_and_samesite(world: World) -> None:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://hitl")
    page = await client.get("/login")
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    await client.aclose()
    await asyncio.sleep(0)


async def test_repeated_failed_sign_ins_are_throttled(world: World) -> None:
    # Its own address: throttling is per address too, and the other tests sign in from 127.0.0.1.
    transport = httpx.ASGITransport(app=world.app, client=("192.0.2.99", 50000))
    client = httpx.AsyncClient(transport=transport, base_url="http://hitl")
    token = csrf_of((await client.get("/login")).text)
    form = {"username": "ghost", "password": "nope-nope-nope", "csrf_token": token}
    statuses = [(await client.post("/login", data=form)).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    await client.aclose()


async def test_changing_a_password_signs_the_user_out(world: World) -> None:
    accounts = world.app.state.ctx.accounts
    user = accounts.create("temp-reviewer", "temp-password-123", "reviewer", "default")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="http://hitl")
    await sign_in(client, "temp-reviewer", "temp-password-123")
    assert (await client.get("/queue")).status_code == 200
    changed = await world.clients["admin"].post(
        f"/admin/users/{user.id}",
        data={"password": "a-new-password-456", "csrf_token": world.csrf["admin"]},
    )
    assert changed.status_code == 303
    assert (await client.get("/queue")).status_code == 401
    await client.aclose()


async def test_row_ids_beyond_64_bits_are_refused_not_crashed(world: World) -> None:
    # Found by the reliability suite's schema fuzz: the integer overflowed in the DB driver (500).
    client = world.clients["anonymous"]
    auth = {"authorization": f"Bearer {world.keys['admin']}"}
    for path in (f"/api/v1/items/{2**63}", f"/api/v1/items/{10**22}", "/api/v1/items/0"):
        got = await client.get(path, headers=auth)
        assert got.status_code == 400, (path, got.text)
        assert got.json()["error"]["param"] == "item_id"
    page = await world.clients["reviewer"].get(f"/items/{2**64}")
    assert 400 <= page.status_code < 500, page.text
