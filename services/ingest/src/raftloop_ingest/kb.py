"""Knowledge documents in, document events out; shared by the CLI and the HTTP endpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from raftloop_core.events import DocumentDeleted, DocumentSubmitted, Event
from raftloop_ingest.documents import DocumentError, expand, parse
from raftloop_ingest.domain import IngestStore, Publish, document_id

log = logging.getLogger(__name__)

Status = Literal["submitted", "unchanged", "deleted", "error"]


class UnknownDocument(LookupError):
    """The tenant has no document with this id."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one document."""

    source: str
    status: Status
    document_id: str | None = None
    title: str | None = None
    error: str | None = None

    def line(self) -> str:
        """One line for people."""
        if self.status == "error":
            return f"error: {self.error}"
        return f"{self.status}: {self.source} ({self.document_id})"


@dataclass
class KnowledgeBase:
    """Parses documents and publishes document events, skipping unchanged content."""

    store: IngestStore
    publish: Publish

    async def submit(self, source: str, data: bytes, *, tenant: str) -> Outcome:
        """Parse and publish one document; unchanged content publishes nothing."""
        try:
            doc = parse(source, data)
        except DocumentError as exc:
            return Outcome(source, "error", error=str(exc))
        doc_id = document_id(tenant, source)
        if self.store.document_hash(doc_id) == doc.content_hash:
            return Outcome(source, "unchanged", doc_id, doc.title)
        event = DocumentSubmitted(
            tenant=tenant,
            document_id=doc_id,
            source=source,
            title=doc.title,
            text=doc.text,
            content_hash=doc.content_hash,
            format=doc.format,
            metadata=doc.metadata,
        )
        await self.publish(event)
        self.store.save_document(
            doc_id, tenant=tenant, source=source, content_hash=doc.content_hash
        )
        log.info("document submitted", extra={"document_id": doc_id, "tenant": tenant})
        return Outcome(source, "submitted", doc_id, doc.title)

    async def remove(
        self, source: str, *, tenant: str, doc_id: str | None = None, known_only: bool = False
    ) -> Outcome:
        """Publish the deletion of a document of `tenant`, named by its source or id.

        With `known_only` (the HTTP API) a document the tenant never added is refused, and
        another tenant's document is as unknown as a made-up id. The operator's CLI leaves it
        off, so it can also clear chunks whose record is gone.

        Raises:
            UnknownDocument: `known_only` and the tenant has no such document.
        """
        doc_id = doc_id or document_id(tenant, source)
        if known_only and not self.store.has_document(doc_id, tenant=tenant):
            raise UnknownDocument(f"no document {doc_id!r} in tenant {tenant!r}")
        event: Event = DocumentDeleted(tenant=tenant, document_id=doc_id, source=source or None)
        await self.publish(event)
        self.store.delete_document(doc_id, tenant=tenant)
        return Outcome(source or doc_id, "deleted", doc_id)

    async def add_paths(self, paths: list[Path], *, tenant: str) -> list[Outcome]:
        """Submit every supported file under `paths`; each bad one yields an error outcome."""
        files, errors = expand(paths)
        outcomes = [Outcome(e.split(":", 1)[0], "error", error=e) for e in errors]
        for path in files:
            source = str(path.resolve())
            try:
                data = path.read_bytes()
            except OSError as exc:
                outcomes.append(
                    Outcome(source, "error", error=f"{path}: cannot read ({exc.strerror})")
                )
                continue
            outcomes.append(await self.submit(source, data, tenant=tenant))
        return outcomes
