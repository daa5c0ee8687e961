"""I/O of the gateway: Kafka publishing for capture, the rag retrieval client."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
from faststream.kafka import KafkaBroker
from pydantic import TypeAdapter, ValidationError

from raftloop_core.events import RetrievedChunk
from raftloop_core.logs import INTERACTION_ID_HEADER, bound
from raftloop_gateway.spool import Record

log = logging.getLogger(__name__)

_CHUNKS = TypeAdapter(list[RetrievedChunk])
JSON_HEADERS = {"content-type": "application/json"}


class KafkaSender:
    """Publishes capture records through the service's FastStream broker."""

    def __init__(self, broker: KafkaBroker, *, timeout_s: float) -> None:
        self.broker = broker
        self.timeout_s = timeout_s
        self.connected = False

    async def __call__(self, records: list[Record]) -> list[Record]:
        """Send records; return those that were not acknowledged."""
        if not self.connected:
            return records
        futures: list[Any] = []
        for record in records:
            try:
                futures.append(
                    await self.broker.publish(
                        record.value,
                        topic=record.topic,
                        key=record.key,
                        headers=JSON_HEADERS,
                        no_confirm=True,
                    )
                )
            # The producer refused before sending (the broker is gone): whatever it raised, the
            # record stays in the spool for the next attempt.
            except Exception as exc:  # noqa: BLE001
                log.warning("publish failed", extra={"error": repr(exc)})
                futures.append(exc)
        waiting = [f for f in futures if isinstance(f, asyncio.Future)]
        if waiting:
            # One wait for the whole batch: a per-record wait_for costs a task each.
            await asyncio.wait(waiting, timeout=self.timeout_s)
        failed: list[Record] = []
        for record, future in zip(records, futures, strict=True):
            if not isinstance(future, asyncio.Future) or not future.done() or future.cancelled():
                failed.append(record)
            elif future.exception() is not None:
                log.warning("publish not acknowledged", extra={"error": repr(future.exception())})
                failed.append(record)
        return failed


class RagRetriever:
    """The rag service's `POST /v1/retrieve`, called with an internal-role key."""

    def __init__(self, client: httpx.AsyncClient, *, base_url: str, api_key: str) -> None:
        self.client = client
        self.url = base_url.rstrip("/") + "/v1/retrieve"
        self.headers = {"Authorization": f"Bearer {api_key}"}

    async def retrieve(self, query: str, *, k: int, tenant: str) -> list[RetrievedChunk]:
        """Chunks for `query` in `tenant`; an empty list (and a log line) when rag fails."""
        try:
            headers = self.headers
            if interaction := bound("interaction_id"):  # rag logs the retrieval under this id
                headers = headers | {INTERACTION_ID_HEADER: interaction}
            response = await self.client.post(
                self.url, json={"query": query, "k": k, "tenant": tenant}, headers=headers
            )
            response.raise_for_status()
            return _CHUNKS.validate_python(response.json().get("chunks", []))
        except (httpx.HTTPError, ValueError, ValidationError, AttributeError) as exc:
            log.warning(
                "retrieval failed; answering without sources",
                extra={"url": self.url, "error": repr(exc)[:300]},
            )
            return []
