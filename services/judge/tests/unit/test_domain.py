import math
from uuid import uuid4

import pytest

from raftloop_core.events import CriterionScore
from raftloop_judge import domain


def s(name: str, score: float, spread: float | None = None) -> CriterionScore:
    return CriterionScore(criterion=name, score=score, spread=spread)


def test_output_id_is_one_per_interaction_revision_and_version() -> None:
    i = uuid4()
    assert domain.output_event_id(i, 1, "v") == domain.output_event_id(i, 1, "v")
    assert domain.output_event_id(i, 2, "v") != domain.output_event_id(i, 1, "v")
    assert domain.output_event_id(i, 1, "w") != domain.output_event_id(i, 1, "v")


def test_overall_is_the_weighted_mean_of_llm_criteria_only() -> None:
    scores = [s("correctness", 5), s("tone", 1), s("ref_relevance", 1)]
    assert domain.overall_score(scores, {"correctness": 3, "tone": 1}) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="no LLM"):
        domain.overall_score([s("ref_relevance", 3)], {"tone": 1})


def test_uncertainty_combines_spread_and_evaluator_disagreement() -> None:
    weights = {"groundedness": 1.0, "tone": 1.0}
    calm = [s("groundedness", 4, 0.3), s("tone", 4, 0.4), s("ref_groundedness", 4)]
    assert domain.uncertainty(calm, weights) == pytest.approx(math.sqrt((0.09 + 0.16) / 2))
    torn = [s("groundedness", 5, 0.0), s("tone", 4, 0.0), s("ref_groundedness", 2)]
    assert domain.uncertainty(torn, weights) == pytest.approx(3.0)


def test_features_impute_missing_criteria_with_overall() -> None:
    f = domain.features([s("tone", 2)], 3.5, 0.2, True, ["tone", "safety"])
    assert f["score_tone"] == 2
    assert f["score_safety"] == 3.5
    assert f["score_ref_agreement"] == 3.5
    assert f["flagged"] == 1.0
