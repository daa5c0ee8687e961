"""Agreement figures are a tenant's own; protected ops routes need an operator's key."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from raftloop_core.api import ApiKey, KeyStore
from raftloop_core.credentials import hash_key
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import ops_statuses
from raftloop_judge.adapters import OpenAIChatEndpoint, SentenceTransformerEmbedder
from raftloop_judge.app import create_app
from raftloop_judge.domain import LabelRecord
from raftloop_judge.store import SqlJudgeStore

from .conftest import openai_client
from .test_app import judge_settings

pytestmark = pytest.mark.integration

KEYS = {
    "acme-admin": ("acme", "admin", ()),
    "acme-internal": ("acme", "internal", ()),
    "globex-admin": ("globex", "admin", ()),
    "platform": ("default", "internal", ("*",)),
}
LABELS = {"acme": 6, "globex": 9}


def label(tenant: str, rng: random.Random) -> LabelRecord:
    approved = rng.random() < 0.5
    return LabelRecord(
        review_id=str(uuid4()),
        interaction_id=str(uuid4()),
        approved=approved,
        features={"score_overall": rng.uniform(1, 5)},
        judge_pass={"overall": rng.random() < 0.5},
        reviewer_pass={"overall": approved},
        slices={"tenant": tenant, "adapter": "base", "retrieval": "no_context"},
    )


@pytest.fixture
async def http(
    kafka_settings: KafkaSettings,
    unique: Callable[[str], str],
    tmp_path: Path,
    stubs: dict[str, str],
    embedder: SentenceTransformerEmbedder,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = judge_settings(kafka_settings, tmp_path, unique, stubs["logprobs"])
    store = SqlJudgeStore(settings.database_url())
    rng = random.Random(17)
    for tenant, n in LABELS.items():
        for _ in range(n):
            assert store.add_label(label(tenant, rng))
    keys = KeyStore(
        ApiKey(key_id=name, key_sha256=hash_key(name), tenant=t, role=role, tenants=listed)
        for name, (t, role, listed) in KEYS.items()
    )
    app = create_app(
        settings,
        endpoint=OpenAIChatEndpoint(openai_client(stubs["logprobs"])),
        embedder=embedder,
        store=store,
        keys=keys,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://judge") as client:
        yield client


async def agreement(http: httpx.AsyncClient, who: str, **params: str) -> httpx.Response:
    return await http.get(
        "/v1/agreement", params=params, headers={"Authorization": f"Bearer {who}"}
    )


@pytest.mark.parametrize(("who", "tenant"), [("acme-admin", "acme"), ("globex-admin", "globex")])
async def test_each_tenants_key_sees_only_its_own_labels(
    http: httpx.AsyncClient, who: str, tenant: str
) -> None:
    response = await agreement(http, who)
    assert response.status_code == 200, response.text
    figures = response.json()
    assert figures["tenant"] == tenant
    assert figures["window"] == LABELS[tenant]
    assert figures["criteria"]["overall"]["n"] == LABELS[tenant]
    assert set(figures["slices"]["tenant"]) == {tenant}
    other = ({"acme", "globex"} - {tenant}).pop()
    assert other not in response.text


@pytest.mark.parametrize("who", ["acme-admin", "acme-internal"])
async def test_a_tenants_key_cannot_name_another_tenant(http: httpx.AsyncClient, who: str) -> None:
    response = await agreement(http, who, tenant="globex")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_forbidden"
    assert "globex" not in response.text.replace("tenant 'globex'", "")


async def test_the_platform_key_may_name_any_tenant(http: httpx.AsyncClient) -> None:
    figures = (await agreement(http, "platform", tenant="globex")).json()
    assert (figures["tenant"], figures["window"]) == ("globex", LABELS["globex"])
    own = (await agreement(http, "platform")).json()
    assert (own["tenant"], own["window"]) == ("default", 0)


async def test_metrics_and_docs_need_an_operators_key_when_protected(
    kafka_settings: KafkaSettings,
    unique: Callable[[str], str],
    tmp_path: Path,
    stubs: dict[str, str],
    embedder: SentenceTransformerEmbedder,
) -> None:
    settings = judge_settings(kafka_settings, tmp_path, unique, stubs["logprobs"])
    settings = settings.model_copy(
        update={"runtime": settings.runtime.model_copy(update={"protect_ops": True})}
    )
    keys = KeyStore(
        [
            ApiKey(key_id="a", key_sha256=hash_key("acme-admin"), tenant="acme", role="admin"),
            ApiKey(key_id="m", key_sha256=hash_key("metrics-key"), role="metrics"),
        ]
    )
    app = create_app(
        settings,
        endpoint=OpenAIChatEndpoint(openai_client(stubs["logprobs"])),
        embedder=embedder,
        store=SqlJudgeStore(settings.database_url()),
        keys=keys,
    )
    who = {"acme-admin": "acme-admin", "metrics": "metrics-key"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://judge") as http:
        got = await ops_statuses(http, who)
    assert got["/metrics"] == {"none": 401, "acme-admin": 403, "metrics": 200}
    assert got["/openapi.json"] == {"none": 401, "acme-admin": 200, "metrics": 200}
    assert set(got["/healthz"].values()) == {200}
