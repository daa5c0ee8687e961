"""The document API: upload knowledge documents, withdraw them.

No `from __future__ import annotations` here: FastAPI must see the local `CallerDep` alias.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile
from pydantic import BaseModel

from raftloop_core.api import ApiError, Caller, KeyStore, require
from raftloop_ingest.kb import KnowledgeBase, Status, UnknownDocument, Upload, UploadRefused
from raftloop_ingest.sandbox import ParseTimeout


class DocumentResult(BaseModel):
    """What happened to one uploaded document."""

    source: str
    status: Status
    document_id: str | None = None
    title: str | None = None
    error: str | None = None


class DocumentsResponse(BaseModel):
    """The outcome of an upload, one entry per file."""

    tenant: str
    documents: list[DocumentResult]


def refusal(exc: UploadRefused) -> ApiError:
    """413 when a file is too large, else 422 (a parse that ran out of time, or unreadable)."""
    if exc.too_large:
        return ApiError(413, str(exc), code="too_large", param="files")
    timed_out = any(isinstance(e, ParseTimeout) for e in exc.errors)
    code = "parse_timeout" if timed_out else "unreadable_document"
    return ApiError(422, str(exc), code=code, param="files")


def documents_router(kb: KnowledgeBase, keys: KeyStore, *, max_bytes: int) -> APIRouter:
    """`POST /v1/documents` and `DELETE /v1/documents/{document_id}` (internal or admin key).

    Both act for the key's own tenant only: a document of another tenant is a 404.
    """
    router = APIRouter(prefix="/v1/documents", tags=["documents"])
    CallerDep = Annotated[Caller, Depends(require(keys, "internal"))]

    @router.post("", response_model=DocumentsResponse)
    async def upload(
        caller: CallerDep, files: Annotated[list[UploadFile], File()]
    ) -> DocumentsResponse:
        """Parse and check every file, then publish them all; the tenant is the key's.

        All or nothing: a file that is too large (413) or unreadable (422) refuses the whole
        upload, naming each such file, and nothing of it is published.
        """
        uploads = []
        for upload in files:
            name = upload.filename or "upload"
            data = await upload.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise ApiError(
                    413,
                    f"{name} is larger than {max_bytes} bytes (INGEST_MAX_UPLOAD_BYTES)",
                    code="too_large",
                    param="files",
                )
            uploads.append(Upload(f"upload:{name}", data))
        try:
            outcomes = await kb.submit_all(uploads, tenant=caller.tenant)
        except UploadRefused as exc:
            raise refusal(exc) from exc
        results = [DocumentResult(**vars(outcome)) for outcome in outcomes]
        return DocumentsResponse(tenant=caller.tenant, documents=results)

    @router.delete("/{document_id}", response_model=DocumentsResponse)
    async def remove(caller: CallerDep, document_id: str) -> DocumentsResponse:
        """Publish the deletion of a document of the key's tenant (404 for any other)."""
        try:
            outcome = await kb.remove(document_id, tenant=caller.tenant, known_only=True)
        except UnknownDocument as exc:
            raise ApiError(
                404,
                f"no document {document_id[:64]!r} among this key's tenant's documents; use "
                "an id that an upload of this tenant returned",
                code="document_not_found",
                param="document_id",
            ) from exc
        return DocumentsResponse(tenant=caller.tenant, documents=[DocumentResult(**vars(outcome))])

    return router
