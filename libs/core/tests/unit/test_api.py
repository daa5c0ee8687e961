from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel

from raftloop_core.api import ApiError, ApiKey, Caller, KeyStore, install_error_handlers, require
from raftloop_core.credentials import hash_key

KEYS = {"client": "c" * 20, "internal": "i" * 20, "admin": "a" * 20}


def make_app() -> FastAPI:
    store = KeyStore(
        ApiKey(key_id=role, key_sha256=hash_key(key), role=role)  # type: ignore[arg-type]
        for role, key in KEYS.items()
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

    @app.get("/boom")
    async def boom(caller: Annotated[Caller, Depends(require(store, "client"))]) -> None:
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
