"""HTTP routes: pairwise judging for the trainer's gate, agreement figures for dashboards.

No `from __future__ import annotations` here: FastAPI must see the local dependency alias.
"""

from typing import Annotated, Literal

import openai
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from raftloop_core.api import ApiError, Caller, KeyStore, require
from raftloop_core.events import Tenant
from raftloop_judge.backpressure import EndpointStalled
from raftloop_judge.evaluators import JudgeFailed, PairwiseJudge
from raftloop_judge.service import JudgeService

MAX_TEXT = 20_000


class PairwiseRequest(BaseModel):
    """Two answers to one question."""

    question: str = Field(min_length=1, max_length=MAX_TEXT)
    answer_a: str = Field(max_length=MAX_TEXT)
    answer_b: str = Field(max_length=MAX_TEXT)
    context: list[str] = Field(default_factory=list, max_length=20)
    criterion: str = Field(default="overall quality", max_length=200)


class PairwiseResponse(BaseModel):
    """The verdict, judged in both orders."""

    winner: Literal["a", "b", "tie"]
    consistent: bool
    preference_a: float
    first_order: float
    second_order: float
    judge_version: str


def judge_router(keys: KeyStore, service: JudgeService, pairwise: PairwiseJudge) -> APIRouter:
    """Routes for internal callers (and admins)."""
    router = APIRouter(prefix="/v1")
    internal = Depends(require(keys, "internal"))
    Internal = Annotated[Caller, internal]

    @router.post("/pairwise", dependencies=[internal])
    async def compare(body: PairwiseRequest) -> PairwiseResponse:
        try:
            verdict = await pairwise.compare(
                body.question,
                body.answer_a,
                body.answer_b,
                context=body.context,
                criterion=body.criterion,
            )
        except JudgeFailed as exc:
            raise ApiError(
                502, f"the judge model gave no usable verdict: {exc}", code="judge_failed"
            ) from exc
        except (
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.APIStatusError,
            EndpointStalled,
        ) as exc:
            raise ApiError(
                503,
                f"the judge endpoint is unavailable ({type(exc).__name__}); "
                "check JUDGE_ENDPOINT_URL and retry",
                code="endpoint_unavailable",
            ) from exc
        return PairwiseResponse(
            winner=verdict.winner,
            consistent=verdict.consistent,
            preference_a=verdict.preference_a,
            first_order=verdict.first_order,
            second_order=verdict.second_order,
            judge_version=pairwise.version,
        )

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
