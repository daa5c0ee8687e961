"""Calibration against synthetic reviewer labels, through the service and its SQLite state."""

from __future__ import annotations

import random
from pathlib import Path
from uuid import uuid4

import pytest

from raftloop_core.events import (
    CriterionLabel,
    CriterionScore,
    InteractionJudged,
    Judgement,
    ReviewCompleted,
)
from raftloop_judge.adapters import SentenceTransformerEmbedder
from raftloop_judge.calibration import auc

from .conftest import make_service
from .test_endpoint_behaviours import ingested

pytestmark = pytest.mark.integration


def synthetic(rng: random.Random, version: str) -> tuple[InteractionJudged, ReviewCompleted]:
    correctness, helpfulness, tone = (rng.uniform(1, 5) for _ in range(3))
    overall = (1.5 * correctness + helpfulness + 0.5 * tone) / 3
    event = ingested(f"question {rng.random()}", "an answer")
    judged = InteractionJudged(
        interaction=event.interaction,
        judgement=Judgement(
            judge_version=version,
            scores=[
                CriterionScore(criterion="correctness", score=correctness, spread=0.3),
                CriterionScore(criterion="helpfulness", score=helpfulness, spread=0.3),
                CriterionScore(criterion="tone", score=tone, spread=0.3),
            ],
            overall=overall,
            uncertainty=0.3,
        ),
        ingested_event_id=event.event_id,
    )
    # Reviewers approve on correctness alone (10% noise); tone labels are coin flips.
    correct = (correctness >= 3.0) != (rng.random() < 0.05)
    approved = (correctness >= 3.0) != (rng.random() < 0.10)
    review = ReviewCompleted(
        review_id=uuid4(),
        interaction_id=event.interaction.interaction_id,
        reviewer="r",
        action="approved" if approved else "rejected",
        criterion_labels=[
            CriterionLabel(criterion="correctness", passed=correct),
            CriterionLabel(criterion="tone", passed=rng.random() < 0.5),
        ],
    )
    return judged, review


async def test_agreement_and_calibrator_from_synthetic_labels(
    stubs: dict[str, str], tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    service, _ = make_service(
        stubs["logprobs"],
        tmp_path,
        embedder,
        criteria=["correctness", "helpfulness", "tone"],
        agreement_window=400,
        calibration_min_labels=50,
        calibration_refit_every=50,
    )
    rng = random.Random(7)
    version = service.judge.version
    train = [synthetic(rng, version) for _ in range(400)]
    held_out = [synthetic(rng, version) for _ in range(300)]
    for judged, review in train:
        service.store.save_judgement(judged)
        assert await service.on_review(review)
    assert not await service.on_review(train[0][1])  # a redelivered review counts once

    figures = await service.agreement("default")  # the synthetic reviews' tenant
    criteria = figures["criteria"]
    assert isinstance(criteria, dict)
    kappa = {c: f["kappa"] for c, f in criteria.items()}
    print(f"kappa: {kappa}")  # noqa: T201
    assert kappa["correctness"] > 0.8
    assert abs(kappa["tone"]) < 0.15
    assert figures["slices"]["retrieval"]  # type: ignore[index]

    assert service.calibrator is not None
    labels = [r.action == "approved" for _, r in held_out]
    raw = [j.judgement.overall or 0.0 for j, _ in held_out]
    calibrated = []
    for judged, _ in held_out:
        j = judged.judgement
        feats = service.judge_features(j)
        calibrated.append(service.calibrator.predict(feats))
    raw_auc, cal_auc = auc(raw, labels), auc(calibrated, labels)
    print(f"held-out AUC: raw overall {raw_auc:.3f}, calibrated {cal_auc:.3f}")  # noqa: T201
    assert raw_auc is not None
    assert cal_auc is not None
    assert cal_auc > raw_auc + 0.02
