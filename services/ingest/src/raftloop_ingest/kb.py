"""Knowledge documents in, document events out; shared by the CLI and the HTTP endpoint.

Every document is parsed and checked (its limits, and the size of every event it becomes)
before any of its events is published; an upload checks all of its files first, so a bad
file refuses the whole upload and nothing of it reaches the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from raftloop_core.events import DocumentDeleted, DocumentSubmitted
from raftloop_ingest.documents import DocumentError, DocumentTooLarge, ParsedDocument, expand
from raftloop_ingest.domain import IngestStore, Publish, document_id
from raftloop_ingest.parts import EventTooLarge, submitted_events

log = logging.getLogger(__name__)

Status = Literal["submitted", "unchanged", "deleted", "error"]


class UnknownDocument(LookupError):
    """The tenant has no document with this id."""


class UploadRefused(ValueError):
    """Files of an upload cannot be accepted, so none of its files was published."""

    def __init__(self, errors: Sequence[DocumentError]) -> None:
        self.errors = list(errors)
        super().__init__(
            "; ".join(str(e) for e in self.errors) + ". Nothing of this upload was published."
        )

    @property
    def too_large(self) -> bool:
        """Whether a file was refused for its size (else it could not be read)."""
        return any(isinstance(e, DocumentTooLarge) for e in self.errors)


class DocumentParser(Protocol):
    """Turns a document's bytes into clean text (see `sandbox.SandboxedParser`)."""

    async def parse(self, name: str, data: bytes) -> ParsedDocument:
        """Clean text and metadata, or a `DocumentError` saying why not."""
        ...


@dataclass(frozen=True)
class Upload:
    """One file to add.

    `source` names it for people and travels in its events: a file name, or a path inside the
    folder it was added from, never a path on this server. `id_seed`, when given, is what the
    document id derives from instead (the CLI's resolved path, so that adding the same file
    again keeps its id); it never leaves this service.
    """

    source: str
    data: bytes
    id_seed: str | None = None


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


@dataclass(frozen=True)
class Prepared:
    """A parsed, checked document and the events that will publish it."""

    source: str
    document_id: str
    title: str
    content_hash: str
    events: list[DocumentSubmitted]
    unchanged: bool


@dataclass
class KnowledgeBase:
    """Parses documents and publishes document events, skipping unchanged content."""

    store: IngestStore
    publish: Publish
    parser: DocumentParser
    max_event_bytes: int

    async def prepare(self, upload: Upload, *, tenant: str) -> Prepared:
        """Parse and check one document, and build its events; publishes nothing.

        Raises:
            DocumentTooLarge: over a size limit, or its events cannot fit the broker's.
            DocumentError: it cannot be read.
        """
        doc = await self.parser.parse(upload.source, upload.data)
        doc_id = document_id(tenant, upload.id_seed or upload.source)
        whole = DocumentSubmitted(
            tenant=tenant,
            document_id=doc_id,
            source=upload.source,
            title=doc.title,
            text=doc.text,
            content_hash=doc.content_hash,
            format=doc.format,
            metadata=doc.metadata,
        )
        try:
            events = submitted_events(whole, self.max_event_bytes)
        except EventTooLarge as exc:
            raise DocumentTooLarge(
                f"{upload.source}: {exc}; shorten its title or raise KAFKA_MAX_MESSAGE_BYTES "
                "(on the broker and every service)"
            ) from exc
        unchanged = self.store.document_hash(doc_id) == doc.content_hash
        return Prepared(upload.source, doc_id, doc.title, doc.content_hash, events, unchanged)

    async def commit(self, prepared: Prepared, *, tenant: str) -> Outcome:
        """Publish a prepared document's events in order (nothing when unchanged)."""
        p = prepared
        if p.unchanged:
            return Outcome(p.source, "unchanged", p.document_id, p.title)
        for event in p.events:
            await self.publish(event)
        self.store.save_document(
            p.document_id, tenant=tenant, source=p.source, content_hash=p.content_hash
        )
        log.info(
            "document submitted",
            extra={"document_id": p.document_id, "tenant": tenant, "parts": len(p.events)},
        )
        return Outcome(p.source, "submitted", p.document_id, p.title)

    async def submit(self, upload: Upload, *, tenant: str) -> Outcome:
        """Parse, check and publish one document; an unreadable one is an error outcome."""
        try:
            prepared = await self.prepare(upload, tenant=tenant)
        except DocumentError as exc:
            return Outcome(upload.source, "error", error=str(exc))
        return await self.commit(prepared, tenant=tenant)

    async def submit_all(self, uploads: Sequence[Upload], *, tenant: str) -> list[Outcome]:
        """Publish every document of an upload, or none: all are checked before any is sent.

        Raises:
            UploadRefused: a file is too large or unreadable (each such file is named).
        """
        prepared: list[Prepared] = []
        errors: list[DocumentError] = []
        for upload in uploads:
            try:
                prepared.append(await self.prepare(upload, tenant=tenant))
            except DocumentError as exc:
                errors.append(exc)
        if errors:
            raise UploadRefused(errors)
        return [await self.commit(p, tenant=tenant) for p in prepared]

    async def remove(
        self, doc_id: str, *, tenant: str, known_only: bool = False, label: str | None = None
    ) -> Outcome:
        """Publish the deletion of a document of `tenant`.

        With `known_only` (the HTTP API) a document the tenant never added is refused, and
        another tenant's document is as unknown as a made-up id. The operator's CLI leaves it
        off, so it can also clear chunks whose record is gone. `label` only names the
        document in the outcome.

        Raises:
            UnknownDocument: `known_only` and the tenant has no such document.
        """
        if known_only and not self.store.has_document(doc_id, tenant=tenant):
            raise UnknownDocument(f"no document {doc_id!r} in tenant {tenant!r}")
        await self.publish(DocumentDeleted(tenant=tenant, document_id=doc_id))
        self.store.delete_document(doc_id, tenant=tenant)
        return Outcome(label or doc_id, "deleted", doc_id)

    async def add_paths(self, paths: list[Path], *, tenant: str) -> list[Outcome]:
        """Submit every supported file under `paths`; each bad one yields an error outcome."""
        files, errors = expand(paths)
        outcomes = [Outcome(e.split(":", 1)[0], "error", error=e) for e in errors]
        for path, label in files:
            try:
                data = path.read_bytes()
            except OSError as exc:
                outcomes.append(
                    Outcome(label, "error", error=f"{path}: cannot read ({exc.strerror})")
                )
                continue
            upload = Upload(label, data, id_seed=str(path.resolve()))
            outcomes.append(await self.submit(upload, tenant=tenant))
        return outcomes
