"""The reference evaluators over a batch: one embedding call, the same vectors and scores."""

from __future__ import annotations

import numpy as np
import pytest

from raftloop_judge.reference import Approved, ReferenceEvaluator, Texts
from raftloop_judge.reference_index import ReferenceIndex

from ..fakes import FakeEmbedder, FakeReferenceStore

QA = [
    ("acme", "How long do refunds take?", "Refunds take five days. They go to your card."),
    ("acme", "How do I reset my password?", "Open settings, then security."),
    ("globex", "How long do refunds take?", "Refunds take five days. They go to your card."),
    ("globex", "Where is the invoice?", "Under billing."),
]


def evaluator(near_duplicate: float = 0.9) -> tuple[ReferenceEvaluator, FakeEmbedder]:
    embedder = FakeEmbedder()
    index = ReferenceIndex(FakeReferenceStore())
    return ReferenceEvaluator(embedder, index, near_duplicate), embedder


def items() -> list[tuple[str, Texts]]:
    return [(tenant, Texts.of(q, a, ["Refunds take five days."])) for tenant, q, a in QA]


async def test_a_batch_is_embedded_in_one_call_and_matches_one_at_a_time() -> None:
    batched, embedder = evaluator()
    alone, _ = evaluator()
    out = await batched.embed_many(items())
    assert len(embedder.calls) == 1
    for item, got in zip(items(), out, strict=True):
        [want] = await alone.embed_many([item])
        np.testing.assert_allclose(got.vecs, want.vecs, atol=1e-6)
        assert batched.score(got) == alone.score(want)
    # Each tenant's identical texts once (a one-sentence answer, a chunk that is a sentence):
    # six distinct texts per tenant; tenants do not share them.
    for name in ("acme", "globex"):
        assert len({x for tenant, texts in items() if tenant == name for x in texts.wanted}) == 6
    assert len(embedder.calls[0]) == 12


async def test_kept_answers_are_matched_within_their_tenant_only() -> None:
    reference, embedder = evaluator()
    kept = await reference.keep(
        [
            Approved("r1", "acme", "How long do refunds take?", "Five business days."),
            Approved("r2", "acme", "   ", "blank question: not kept"),
            Approved("r1", "acme", "How long do refunds take?", "Five business days."),
        ]
    )
    assert kept == [True, False, False]
    assert embedder.calls == [["How long do refunds take?"] * 2]  # one call for the batch
    first = await reference.embed_many(items())
    acme, globex = first[0], first[2]
    assert acme.match is not None
    assert acme.match.hit.reference_id == "r1"
    assert acme.match.hit.similarity == pytest.approx(1.0, abs=1e-6)
    assert globex.match is None
    assert [s.criterion for s in reference.score(acme)][-1] == "ref_agreement"
    calls = len(embedder.calls)
    await reference.embed_many(items())
    assert len(embedder.calls) == calls + 1  # the approved answer's vector was kept
