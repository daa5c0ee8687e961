"""Tenant isolation, idempotent re-indexing, exact deletion and the auth matrix, on real parts."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from faststream.kafka import KafkaMessage
from qdrant_client import AsyncQdrantClient

from raftloop_core.api import KeyStore
from raftloop_core.events import DocumentDeleted, DocumentSubmitted
from raftloop_core.messaging import ERROR_CLASS_HEADER, consumer_options, make_broker
from raftloop_core.settings import KafkaSettings
from raftloop_core.testing import ops_statuses
from raftloop_core.topics import dead_letter
from raftloop_rag.adapters import QdrantIndex, SentenceTransformerEmbedder
from raftloop_rag.app import create_app
from raftloop_rag.domain import point_id
from raftloop_rag.testing import KEYS, RagService, auth, rag_settings, running_rag, wait_for

pytestmark = pytest.mark.integration

SECTION = "Our refund window is {days} days from the purchase date. {extra}"


def doc(document_id: str, tenant: str, text: str, title: str = "Refunds") -> DocumentSubmitted:
    return DocumentSubmitted(
        tenant=tenant,
        document_id=document_id,
        source=f"{tenant}/{document_id}",
        title=title,
        text=text,
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
        format="md",
    )


def long_text(marker: str, sections: int) -> str:
    parts = [f"# Refunds at {marker}"]
    for i in range(sections):
        body = " ".join(
            SECTION.format(days=14 + i, extra=f"{marker} clause {i}.{j} applies to orders.")
            for j in range(12)
        )
        parts.append(f"## Section {i}\n\n{body}")
    return "\n\n".join(parts)


ACME = doc("refunds.md", "acme", long_text("ACME", 4))
ACME_OTHER = doc("shipping.md", "acme", "# Shipping\n\nACME ships parcels in two days.").model_copy(
    update={"metadata": {"lang": "en"}}
)
# Same document id as acme's, other tenant: must never be seen by acme nor overwrite acme's chunks.
GLOBEX = doc("refunds.md", "globex", long_text("GLOBEX", 3))
GLOBEX_SECRET = doc("secret.md", "globex", "# Secret\n\nGLOBEX refunds take ninety days.")


@pytest.fixture(scope="module")
async def rag(
    kafka_settings: KafkaSettings,
    embedder: SentenceTransformerEmbedder,
    keys: KeyStore,
    tmp_path_factory: pytest.TempPathFactory,
    module_unique: Callable[[str], str],
) -> AsyncIterator[RagService]:
    settings = rag_settings(kafka_settings, tmp_path_factory.mktemp("qdrant"), module_unique)
    async with running_rag(settings, embedder, keys) as service:
        await service.apply(ACME, ACME_OTHER, GLOBEX, GLOBEX_SECRET)
        yield service


def texts(response: object) -> list[str]:
    return [c["text"] for c in response.json()["chunks"]]  # type: ignore[attr-defined]


async def test_both_tenants_documents_are_stored_under_distinct_points(rag: RagService) -> None:
    acme = await rag.index.count(tenant="acme", document_id="refunds.md")
    globex = await rag.index.count(tenant="globex", document_id="refunds.md")
    assert acme > 1
    assert globex > 1
    assert point_id("acme", "refunds.md", 0) != point_id("globex", "refunds.md", 0)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"tenant": "acme"},
        {"filters": {"document_id": "refunds.md"}},
        {"filters": {"source": ["globex/refunds.md", "globex/secret.md"]}},
        {"filters": {"document_id": "secret.md"}},
        {"exclude_document_ids": ["shipping.md"], "mmr": True, "k": 50},
    ],
)
async def test_a_client_never_sees_another_tenants_chunks(
    rag: RagService, body: dict[str, object]
) -> None:
    response = await rag.retrieve("acme", query="GLOBEX refunds take ninety days", **body)
    assert response.status_code == 200, response.text
    assert response.json()["tenant"] == "acme"
    assert not any("GLOBEX" in t for t in texts(response))


@pytest.mark.parametrize(
    "filters",
    [
        {"tenant": "globex"},
        {"Tenant": "globex"},
        {"metadata.tenant": "globex"},
        {"tenant_id": "globex"},
        {"text": "GLOBEX"},
        {"document_id": []},
    ],
)
async def test_crafted_filters_are_refused(rag: RagService, filters: dict[str, object]) -> None:
    response = await rag.retrieve("acme", query="refunds", filters=filters)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadFilter"
    assert "GLOBEX" not in response.text


async def test_each_client_sees_its_own_tenant(rag: RagService) -> None:
    globex = await rag.retrieve("globex", query="how long do refunds take", k=50)
    assert globex.json()["tenant"] == "globex"
    found = texts(globex)
    assert found
    assert all("GLOBEX" in t for t in found)
    acme = await rag.retrieve("acme", query="how long do refunds take", k=50)
    assert all("GLOBEX" not in t for t in texts(acme))


async def test_the_platforms_internal_key_may_choose_a_tenant(rag: RagService) -> None:
    chosen = await rag.retrieve("internal", query="ninety days", tenant="globex", k=1)
    assert chosen.json()["tenant"] == "globex"
    assert chosen.json()["chunks"][0]["document_id"] == "secret.md"
    own = await rag.retrieve("internal", query="ninety days")
    assert own.json() == {"chunks": [], "tenant": "default"}


@pytest.mark.parametrize("who", ["acme", "acme-internal", "acme-admin"])
async def test_a_tenants_key_of_any_role_cannot_name_another_tenant(
    rag: RagService, who: str
) -> None:
    response = await rag.retrieve(who, query="GLOBEX refunds take ninety days", tenant="globex")
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["type"] == "permission_error"
    assert error["param"] == "tenant"
    assert "acme" in error["message"]
    assert "GLOBEX" not in response.text
    own = await rag.retrieve(who, query="refunds", tenant="acme", k=50)
    assert own.json()["tenant"] == "acme"
    assert texts(own)
    assert not any("GLOBEX" in t for t in texts(own))


async def test_an_admin_key_of_the_default_tenant_cannot_name_another_tenant(
    rag: RagService,
) -> None:
    response = await rag.retrieve("admin", query="ninety days", tenant="globex")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_forbidden"


async def test_excluded_chunks_and_documents_are_left_out(rag: RagService) -> None:
    first = await rag.retrieve("acme", query="refund window clause 2.3", k=3)
    top = first.json()["chunks"][0]["chunk_id"]
    again = await rag.retrieve("acme", query="refund window clause 2.3", k=3, exclude_ids=[top])
    assert top not in [c["chunk_id"] for c in again.json()["chunks"]]
    rest = await rag.retrieve(
        "acme", query="refund window", k=50, exclude_document_ids=["refunds.md"]
    )
    assert {c["document_id"] for c in rest.json()["chunks"]} == {"shipping.md"}
    bad = await rag.retrieve("acme", query="x", exclude_ids=["refunds.md"])
    assert bad.status_code == 400


async def test_filters_narrow_within_the_tenant(rag: RagService) -> None:
    english = await rag.retrieve("acme", query="refunds", k=50, filters={"metadata.lang": "en"})
    assert [c["document_id"] for c in english.json()["chunks"]] == ["shipping.md"]
    first = await rag.retrieve("acme", query="refunds", k=50, filters={"chunk_index": 0})
    assert {c["chunk_index"] for c in first.json()["chunks"]} == {0}
    assert {c["document_id"] for c in first.json()["chunks"]} >= {"refunds.md", "shipping.md"}


async def test_reindexing_the_same_documents_keeps_the_point_count(rag: RagService) -> None:
    before = await rag.index.count()
    await rag.apply(ACME, GLOBEX, ACME)
    assert await rag.index.count() == before
    registry = rag.app.state.registry
    assert registry.get_sample_value("raftloop_rag_documents_total", {"outcome": "unchanged"}) >= 3


async def test_a_changed_document_drops_the_chunks_it_no_longer_has(rag: RagService) -> None:
    doc_id = "changing.md"
    big = doc(doc_id, "acme", long_text("V1", 5))
    await rag.apply(big)
    total = await rag.index.count()
    old = await rag.index.count(tenant="acme", document_id=doc_id)
    small = doc(doc_id, "acme", long_text("V2", 1))
    await rag.apply(small)
    new = await rag.index.count(tenant="acme", document_id=doc_id)
    assert 0 < new < old
    assert await rag.index.count() == total - old + new
    found = await rag.retrieve("acme", query="V1 clause", k=50, filters={"document_id": doc_id})
    assert all("V2" in t and "V1" not in t for t in texts(found))


async def test_deleting_a_document_removes_exactly_its_chunks(rag: RagService) -> None:
    doc_id = "doomed.md"
    await rag.apply(doc(doc_id, "acme", long_text("DOOMED", 2)), doc(doc_id, "globex", "# Keep"))
    total = await rag.index.count()
    mine = await rag.index.count(tenant="acme", document_id=doc_id)
    assert mine > 0
    await rag.apply(DocumentDeleted(tenant="acme", document_id=doc_id))
    assert await rag.index.count(tenant="acme", document_id=doc_id) == 0
    assert await rag.index.count() == total - mine
    assert await rag.index.count(tenant="globex", document_id=doc_id) == 1
    # Deleting again (a redelivery) changes nothing.
    await rag.apply(DocumentDeleted(tenant="acme", document_id=doc_id))
    assert await rag.index.count() == total - mine


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "missing_api_key"),
        ({"Authorization": "Bearer nope"}, 401, "invalid_api_key"),
        ({"x-api-key": "nope"}, 401, "invalid_api_key"),
        (auth("acme"), 200, None),
        ({"x-api-key": KEYS["globex"]}, 200, None),
        (auth("internal"), 200, None),
        (auth("admin"), 200, None),
    ],
)
async def test_auth_matrix(
    rag: RagService, headers: dict[str, str], status: int, code: str | None
) -> None:
    response = await rag.http.post("/v1/retrieve", json={"query": "refunds"}, headers=headers)
    assert response.status_code == status
    if code:
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": ""}, "query"),
        ({"query": "x", "k": 0}, "k"),
        ({"query": "x", "k": 51}, "k"),
        ({"query": "x", "nonsense": 1}, "nonsense"),
        ({"query": "x", "tenant": "Not A Slug"}, "tenant"),
    ],
)
async def test_bad_requests_get_the_openai_envelope(
    rag: RagService, body: dict[str, object], param: str
) -> None:
    response = await rag.http.post("/v1/retrieve", json=body, headers=auth("internal"))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_ops_routes(rag: RagService) -> None:
    ready = await rag.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "checks": {"collection": True, "model": True, "broker": True},
    }
    assert (await rag.http.get("/healthz")).json()["service"] == "rag"
    metrics = (await rag.http.get("/metrics")).text
    assert 'raftloop_rag_documents_total{outcome="indexed"}' in metrics
    assert "raftloop_rag_retrieval_seconds_bucket" in metrics


async def test_metrics_and_docs_need_an_operators_key_when_protected(
    kafka_settings: KafkaSettings,
    embedder: SentenceTransformerEmbedder,
    keys: KeyStore,
    tmp_path: Path,
    unique: Callable[[str], str],
) -> None:
    runtime = {"data_dir": tmp_path, "protect_ops": True}
    settings = rag_settings(kafka_settings, tmp_path / "qdrant", unique, runtime=runtime)
    index = QdrantIndex(
        AsyncQdrantClient(path=str(tmp_path / "q")), settings.collection, local=True
    )
    app = create_app(settings, embedder=embedder, index=index, keys=keys)
    who = {k: KEYS[k] for k in ("acme", "acme-admin", "metrics", "internal")}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://rag") as http:
        got = await ops_statuses(http, who)
    await index.close()
    assert got["/metrics"] == {
        "none": 401,
        "acme": 403,
        "acme-admin": 403,
        "metrics": 200,
        "internal": 200,
    }
    assert got["/openapi.json"] == {**got["/metrics"], "acme-admin": 200}
    assert set(got["/healthz"].values()) == {200}


async def test_a_malformed_document_event_is_dead_lettered_and_indexing_goes_on(
    rag: RagService, kafka_settings: KafkaSettings, unique: Callable[[str], str]
) -> None:
    parked: list[KafkaMessage] = []
    watcher = make_broker(kafka_settings)

    @watcher.subscriber(  # type: ignore[untyped-decorator]
        dead_letter(rag.settings.topic), **consumer_options(kafka_settings, group_id=unique("dlt"))
    )
    async def park(msg: KafkaMessage) -> None:
        parked.append(msg)

    async with watcher:
        await watcher.start()
        await rag.producer.publish(
            b'{"action": "submitted", "document_id": "x"}', topic=rag.settings.topic, key=b"x"
        )
        await rag.apply(doc("after.md", "acme", "# After\n\nIndexed after a bad message."))
        await wait_for(lambda: len(parked) == 1)
    assert parked[0].headers[ERROR_CLASS_HEADER] == "ValidationError"
    assert await rag.index.count(tenant="acme", document_id="after.md") == 1
