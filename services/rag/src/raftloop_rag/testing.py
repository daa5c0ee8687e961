"""Test helpers for rag and for services that test against it: run rag on the session broker.

Used by rag's own tests (and usable by the gateway's): `running_rag` starts the real app (real
local-mode Qdrant in a folder, the real broker) and `RagService.apply` publishes document events
and waits until the consumer has applied them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from qdrant_client import AsyncQdrantClient

from raftloop_core.api import ApiKey, KeyStore
from raftloop_core.credentials import hash_key
from raftloop_core.events import DocumentDeleted, DocumentSubmitted
from raftloop_core.messaging import ensure_topics, make_broker
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import Topic, dead_letter
from raftloop_rag.adapters import QdrantIndex
from raftloop_rag.app import create_app
from raftloop_rag.domain import Embedder
from raftloop_rag.lexical import Bm25sSparseEncoder
from raftloop_rag.settings import RagSettings

KEYS = {
    "acme": "test-client-acme-key",
    "globex": "test-client-globex-key",
    "internal": "test-internal-key",
    "admin": "test-admin-key",
    "acme-internal": "test-acme-internal-key",
    "acme-admin": "test-acme-admin-key",
    "metrics": "test-metrics-key",
}
"""Test API keys: a client of tenant acme, one of globex, the platform's internal key (tenant
default, may act for every tenant), an admin of tenant default, acme's internal and admin, and
a metrics key (what Prometheus sends where the ops routes need a key)."""


def sample_keys() -> KeyStore:
    """A KeyStore holding `KEYS`."""
    return KeyStore(
        [
            ApiKey(key_id="acme", key_sha256=hash_key(KEYS["acme"]), tenant="acme", role="client"),
            ApiKey(
                key_id="globex", key_sha256=hash_key(KEYS["globex"]), tenant="globex", role="client"
            ),
            ApiKey(
                key_id="internal",
                key_sha256=hash_key(KEYS["internal"]),
                role="internal",
                tenants=("*",),
            ),
            ApiKey(key_id="admin", key_sha256=hash_key(KEYS["admin"]), role="admin"),
            ApiKey(
                key_id="acme-internal",
                key_sha256=hash_key(KEYS["acme-internal"]),
                tenant="acme",
                role="internal",
            ),
            ApiKey(
                key_id="acme-admin",
                key_sha256=hash_key(KEYS["acme-admin"]),
                tenant="acme",
                role="admin",
            ),
            ApiKey(key_id="metrics", key_sha256=hash_key(KEYS["metrics"]), role="metrics"),
        ]
    )


def auth(who: str) -> dict[str, str]:
    """Headers presenting the test key of `who`."""
    return {"Authorization": f"Bearer {KEYS[who]}"}


async def wait_for(
    predicate: Callable[[], bool], timeout_s: float = 300.0, what: Callable[[], str] = str
) -> None:
    """Poll until `predicate` holds.

    Raises:
        AssertionError: it did not within `timeout_s`; the message is `what()`.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s: {what()}")
        await asyncio.sleep(0.05)


@dataclass
class RagService:
    """A running rag app (lifespan entered), an HTTP client to it and a producer to its topic."""

    app: FastAPI
    http: httpx.AsyncClient
    producer: KafkaBroker
    settings: RagSettings
    index: QdrantIndex

    async def publish(self, event: DocumentSubmitted | DocumentDeleted) -> None:
        """Publish a document event to rag's topic, keyed like production."""
        await self.producer.publish(
            event, topic=self.settings.topic, key=event.document_id.encode()
        )

    def applied(self) -> float:
        """Document events the consumer has finished, whatever the outcome."""
        registry = self.app.state.registry
        return sum(
            registry.get_sample_value("raftloop_rag_documents_total", {"outcome": outcome}) or 0.0
            for outcome in ("indexed", "unchanged", "deleted")
        )

    async def apply(self, *events: DocumentSubmitted | DocumentDeleted) -> None:
        """Publish events through the broker and wait until the consumer has applied them."""
        target = self.applied() + len(events)
        for event in events:
            await self.publish(event)
        await wait_for(
            lambda: self.applied() >= target,
            what=lambda: f"rag applied {self.applied()} of {target} document events",
        )

    async def retrieve(self, who: str, **body: object) -> httpx.Response:
        """POST /v1/retrieve as `who`."""
        return await self.http.post("/v1/retrieve", json=body, headers=auth(who))


@asynccontextmanager
async def running_rag(
    settings: RagSettings, embedder: Embedder, keys: KeyStore
) -> AsyncIterator[RagService]:
    """Start rag on real local-mode Qdrant and the session broker; stop it afterwards."""
    ensure_topics(settings.kafka, {settings.topic: 3, dead_letter(settings.topic): 1})
    location = settings.local_path()
    encoder = Bm25sSparseEncoder()
    client = AsyncQdrantClient(path=str(location))
    index = QdrantIndex(client, settings.collection, local=True, encoder=encoder)
    app = create_app(settings, embedder=embedder, index=index, keys=keys, encoder=encoder)
    producer = make_broker(settings.kafka)
    async with app.router.lifespan_context(app), producer:
        await producer.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rag") as http:
            yield RagService(app, http, producer, settings, index)


def rag_settings(
    kafka: KafkaSettings, folder: Path, unique: Callable[[str], str], **overrides: object
) -> RagSettings:
    """Settings with their own Qdrant folder, collection, topic and consumer group."""
    return RagSettings.model_validate(
        {
            "kafka": kafka,
            "qdrant_path": folder,
            "collection": unique("kb"),
            "topic": unique(str(Topic.KB_DOCUMENT)),
            "consumer_group": unique("rag"),
        }
        | overrides
    )
