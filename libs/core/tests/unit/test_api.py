import json
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel

from raftloop_core.api import ApiError, ApiKey, Caller, KeyStore, install_error_handlers, require
from raftloop_core.credentials import ensure_dev_credentials, hash_key
from raftloop_core.settings import RuntimeSettings, SettingsError

KEYS = {"client": "c" * 20, "internal": "i" * 20, "admin": "a" * 20}


def make_app() -> FastAPI:
    store = KeyStore(
        ApiKey(key_id=role, key_sha256=hash_key(key), role=role) for role, key in KEYS.items()
    )
    app = FastAPI()
    install_error_handlers(app)

    class Body(BaseModel):
        n: int

    @app.post("/internal")
    async def internal(
        body: Body, caller: Annotated[Caller, Depends(require(store, "internal"))]
    ) -> dict[str, str]:
        if body.n < 0:
            raise ApiError(404, "no such thing", code="not_found")
        return {"role": caller.role}

    @app.get("/boom", dependencies=[Depends(require(store, "client"))])
    async def boom() -> None:
        raise RuntimeError("secret detail")

    return app


@pytest.fixture
def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(make_app(), raise_app_exceptions=False), base_url="http://t"
    )


@pytest.mark.parametrize(
    ("key", "status"),
    [
        (None, 401),
        ("bad", 401),
        (KEYS["client"], 403),
        (KEYS["internal"], 200),
        (KEYS["admin"], 200),
    ],
)
async def test_roles_are_checked(client: httpx.AsyncClient, key: str | None, status: int) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = await client.post("/internal", json={"n": 1}, headers=headers)
    assert response.status_code == status
    if status != 200:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_errors_use_the_openai_envelope(client: httpx.AsyncClient) -> None:
    headers = {"x-api-key": KEYS["internal"]}
    invalid = await client.post("/internal", json={"n": "x"}, headers=headers)
    assert invalid.status_code == 400
    assert invalid.json()["error"]["param"] == "n"
    missing = await client.post("/internal", json={"n": -1}, headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "message": "no such thing",
        "type": "not_found_error",
        "param": None,
        "code": "not_found",
    }
    crash = await client.get("/boom", headers={"x-api-key": KEYS["client"]})
    assert crash.status_code == 500
    assert "secret detail" not in crash.text


async def test_a_body_field_named_like_a_location_is_still_named() -> None:
    app = FastAPI()
    install_error_handlers(app)

    class Search(BaseModel):
        query: str
        path: list[int]

    @app.post("/search")
    async def search(body: Search) -> dict[str, str]:
        return {"query": body.query}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        missing = await c.post("/search", json={"path": [1]})
        bad = await c.post("/search", json={"query": "q", "path": ["x"]})
    assert missing.json()["error"]["param"] == "query"
    assert missing.json()["error"]["message"].startswith("invalid request: query: ")
    assert bad.json()["error"]["param"] == "path.0"


def test_a_key_acts_for_its_own_tenant_only_unless_its_record_lists_others() -> None:
    own = Caller("acme-internal", "acme", "internal")
    assert own.acting_for(None) == "acme"
    assert own.acting_for("acme") == "acme"
    with pytest.raises(ApiError) as refused:
        own.acting_for("globex")
    assert refused.value.status == 403
    assert refused.value.code == "tenant_forbidden"
    assert refused.value.param == "tenant"
    assert "'acme'" in refused.value.message
    listed = Caller("gw", "default", "internal", tenants=frozenset({"acme"}))
    assert listed.acting_for("acme") == "acme"
    assert not listed.may_act_for("globex")
    platform = Caller("gw", "default", "internal", tenants=frozenset({"*"}))
    assert platform.acting_for("globex") == "globex"
    assert platform.acting_for(None) == "default"


def test_old_keys_files_load_and_tenants_is_only_for_platform_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    rows = [
        {"key_id": "old", "key_sha256": hash_key("old-key"), "tenant": "acme", "role": "admin"},
        {
            "key_id": "platform",
            "key_sha256": hash_key("platform-key"),
            "role": "internal",
            "tenants": ["*"],
        },
        {
            "key_id": "two",
            "key_sha256": hash_key("two-key"),
            "tenant": "acme",
            "role": "internal",
            "tenants": ["globex"],
        },
        {"key_id": "m", "key_sha256": hash_key("metrics-key"), "role": "metrics"},
    ]
    keys.write_text(json.dumps(rows))
    store = KeyStore.from_file(keys)
    old = store.lookup("old-key")
    assert old is not None
    assert old.tenants == frozenset()
    assert not old.may_act_for("globex")
    platform = store.lookup("platform-key")
    assert platform is not None
    assert platform.may_act_for("globex")
    two = store.lookup("two-key")
    assert two is not None
    assert (two.may_act_for("globex"), two.may_act_for("initech")) == (True, False)
    for bad, why in [
        ({"role": "client", "tenants": ["*"]}, "only internal and admin keys"),
        ({"role": "internal", "tenants": ["*", "acme"]}, "either"),
        ({"role": "internal", "tenants": ["Not A Tenant"]}, "is not a tenant"),
    ]:
        keys.write_text(json.dumps([{"key_id": "x", "key_sha256": hash_key("x"), **bad}]))
        with pytest.raises(SettingsError, match=why):
            KeyStore.from_file(keys)


def test_dev_credentials_give_only_the_internal_key_every_tenant(tmp_path: Path) -> None:
    runtime = RuntimeSettings(data_dir=tmp_path)
    store = KeyStore.for_runtime(runtime, None)
    keys = ensure_dev_credentials(runtime).api_keys
    callers = {role: store.lookup(key) for role, key in keys.items()}
    assert {role: c.may_act_for("globex") for role, c in callers.items() if c} == {
        "client": False,
        "internal": True,
        "admin": False,
    }
