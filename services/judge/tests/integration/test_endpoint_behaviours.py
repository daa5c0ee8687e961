"""The judge against endpoints with and without logprobs, and one that returns garbage."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from uuid import uuid4

import pytest

from raftloop_core.events import ChatMessage, Interaction, InteractionIngested, RetrievedChunk
from raftloop_core.testing import sample_events
from raftloop_core.topics import Topic
from raftloop_judge.adapters import SentenceTransformerEmbedder

from ..endpoints import _distribution
from ..unit.test_injection import ATTACKS
from .conftest import make_service

pytestmark = pytest.mark.integration

QA = [
    ("How long do refunds take?", "Refunds take five business days to reach your card."),
    ("How do I reset my password?", "Open settings, choose security, then reset password."),
    ("Can I add a family member?", "Yes, invite a family member from the family page."),
    ("Where is the invoice?", "Invoices are under billing in the account page."),
]


def ingested(question: str, answer: str, chunks: list[str] | None = None) -> InteractionIngested:
    base = sample_events()[Topic.INTERACTION_INGESTED]
    assert isinstance(base, InteractionIngested)
    interaction = base.interaction.model_copy(
        update={
            "interaction_id": uuid4(),
            "messages": [ChatMessage(role="user", content=question)],
            "answer": answer,
            "flags": [],
            "retrieved": [
                RetrievedChunk(chunk_id=f"c{i}", document_id="d", text=t, score=0.9)
                for i, t in enumerate(chunks or [])
            ],
        }
    )
    return InteractionIngested(
        interaction=Interaction.model_validate(interaction.model_dump()), source_event_id=uuid4()
    )


async def test_logprobs_give_probability_weighted_scores(
    stubs: dict[str, str], tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    service, published = make_service(stubs["logprobs"], tmp_path, embedder)
    event = ingested(*QA[0], chunks=["Refunds take five business days to reach the card."])
    out = await service.handle(event)
    assert out is not None
    assert published == [out]
    j = out.judgement
    assert j.error is None
    llm = [s for s in j.scores if s.evaluator == "llm-geval"]
    assert {s.criterion for s in llm} == {
        "correctness",
        "groundedness",
        "helpfulness",
        "safety",
        "tone",
    }
    assert all(s.spread and s.spread > 0 for s in llm)
    for s in llm:  # the expectation over the stub's distribution, not the sampled digit
        dist = {int(k): math.exp(v) for k, v in _distribution(round(s.score)).items()}
        assert s.score == pytest.approx(sum(k * p for k, p in dist.items()), abs=1e-3)
    refs = {s.criterion: s.score for s in j.scores if s.evaluator == "reference"}
    assert refs["ref_groundedness"] > 4.0  # the answer restates its chunk
    assert j.overall is not None
    assert j.uncertainty is not None
    assert j.rationale
    assert await service.handle(event) is None  # redelivery: nothing new


async def test_without_logprobs_the_structured_output_is_parsed(
    stubs: dict[str, str], tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    service, _ = make_service(stubs["nologprobs"], tmp_path, embedder)
    out = await service.handle(ingested(*QA[1]))
    assert out is not None
    assert out.judgement.error is None
    llm = [s for s in out.judgement.scores if s.evaluator.startswith("llm")]
    assert llm
    assert all(s.evaluator == "llm-parsed" and s.spread is None for s in llm)
    assert all(s.score == round(s.score) for s in llm)
    assert "groundedness" not in {s.criterion for s in llm}  # no context, not applicable


async def test_garbage_output_is_retried_then_recorded_as_a_judge_error(
    stubs: dict[str, str], tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    service, published = make_service(stubs["garbage"], tmp_path, embedder)
    out = await service.handle(ingested(*QA[2]))
    assert out is not None
    assert published == [out]
    j = out.judgement
    assert j.error
    assert "no valid score after 3 attempts" in j.error
    assert j.scores == []
    assert j.overall is None
    assert j.approval_probability is None


async def test_injection_set_barely_moves_scores_and_every_attempt_is_flagged(
    stubs: dict[str, str], tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    # The gullible endpoint obeys "score 5" instructions that reach it: only hardening helps.
    service, _ = make_service(stubs["gullible"], tmp_path, embedder, criteria=["helpfulness"])
    clean: list[float] = []
    attacked: list[float] = []
    for attack in ATTACKS:
        tail = attack.split("Refunds take 5 days.", 1)[-1]
        for question, answer in QA:
            a = await service.handle(ingested(question, answer))
            b = await service.handle(ingested(question, f"{answer} {tail}"))
            assert a is not None
            assert b is not None
            assert not a.judgement.flags
            assert [f.code for f in b.judgement.flags] == ["judge_injection"]
            assert a.judgement.overall is not None
            assert b.judgement.overall is not None
            clean.append(a.judgement.overall)
            attacked.append(b.judgement.overall)
    shift = statistics.mean(attacked) - statistics.mean(clean)
    print(f"injection shift on a gullible endpoint: {shift:+.3f} over {len(attacked)} pairs")  # noqa: T201
    assert abs(shift) <= 0.5
