"""HTTP routes: agreement figures for dashboards.

No `from __future__ import annotations` here: FastAPI must see the local dependency alias.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from raftloop_core.api import Caller, KeyStore, require
from raftloop_core.events import Tenant
from raftloop_judge.service import JudgeService


def judge_router(keys: KeyStore, service: JudgeService) -> APIRouter:
    """Routes for internal callers (and admins)."""
    router = APIRouter(prefix="/v1")
    Internal = Annotated[Caller, Depends(require(keys, "internal"))]

    @router.get("/agreement")
    async def agreement(
        caller: Internal,
        tenant: Annotated[
            Tenant | None,
            Query(description="Default: the key's tenant; another only with a platform key."),
        ] = None,
    ) -> dict[str, object]:
        """Judge-vs-reviewer agreement over one tenant's recent labels."""
        return await service.agreement(caller.acting_for(tenant))

    return router
