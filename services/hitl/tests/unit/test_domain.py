"""Pure decisions: routing, priority, curated examples, agreement statistics, passwords."""

from __future__ import annotations

from uuid import uuid4

import pytest

from raftloop_core import events as ev
from raftloop_hitl import domain
from raftloop_hitl.accounts import hash_password, verify_password

from ..conftest import judged

NEG = ev.Feedback(feedback_id=uuid4(), rating=-1)


def unsampled() -> object:
    return next(i for i in iter(uuid4, None) if not domain.sample(i, "audit", 0.05))


def test_low_approval_goes_to_review() -> None:
    route = domain.route(judged(p=0.3), domain.RoutingPolicy(), None)
    assert route.state == "open"
    assert route.reasons == ("low_approval",)


def test_confident_is_not_made_training_data_by_default() -> None:
    event = judged(p=0.99, interaction_id=unsampled())  # type: ignore[arg-type]
    route = domain.route(event, domain.RoutingPolicy(), None)
    assert route.state == "not_routed"


def test_auto_accept_only_when_an_admin_turns_it_on() -> None:
    event = judged(p=0.99, interaction_id=unsampled())  # type: ignore[arg-type]
    policy = domain.RoutingPolicy(auto_accept=True)
    assert domain.route(event, policy, None).state == "auto_accepted"
    example = domain.auto_example(event)
    assert example.source == "auto_accepted"
    assert example.answer == event.interaction.answer


def test_flagged_interaction_is_never_auto_accepted() -> None:
    event = judged(p=0.99, flagged=True)
    route = domain.route(event, domain.RoutingPolicy(auto_accept=True, auto_accept_above=0.5), None)
    assert route.state == "open"
    assert "flagged" in route.reasons
    with pytest.raises(ValueError, match="human approval"):
        domain.auto_example(event)


def test_negative_feedback_and_judge_failure_route_to_review() -> None:
    event = judged(p=0.99)
    assert "negative_feedback" in domain.route(event, domain.RoutingPolicy(), NEG).reasons
    failed = judged(p=None)
    assert domain.route(failed, domain.RoutingPolicy(), None).reasons == ("judge_unavailable",)


def test_priority_prefers_uncertain_and_impactful_items() -> None:
    uncertain = domain.priority(judged(p=0.5), None)
    sure = domain.priority(judged(p=0.05), None)
    complained = domain.priority(judged(p=0.05), NEG)
    assert uncertain > complained > sure


def test_sampling_is_deterministic_and_close_to_the_rate() -> None:
    ids = [uuid4() for _ in range(4000)]
    picked = [i for i in ids if domain.sample(i, "overlap", 0.1)]
    assert 300 < len(picked) < 500
    assert all(domain.sample(i, "overlap", 0.1) for i in picked)


def decision(
    action: domain.Action, answer: str | None = None, oracle: tuple[str, ...] = ()
) -> domain.Decision:
    return domain.Decision(uuid4(), "rev", action, answer, None, oracle, 1)


def test_curated_example_carries_oracle_chunks_flags_and_lineage() -> None:
    event = judged(p=0.3, flagged=True)
    example = domain.curated_example(
        event, [decision("corrected", "Five days.", ("doc-2#0",))], revision=1
    )
    assert example is not None
    assert example.source == "corrected"
    assert example.answer == "Five days."
    assert [c.chunk_id for c in example.oracle_chunks] == ["doc-2#0"]
    assert example.oracle_chunks[0] == event.interaction.retrieved[1]
    assert example.flags == event.interaction.flags
    assert example.judge_version == event.judgement.judge_version
    assert example.question == event.interaction.question
    assert example.rejected_answer == event.interaction.answer  # what the correction replaced
    again = domain.curated_example(
        event, [decision("corrected", "Five days.", ("doc-2#0",))], revision=1
    )
    assert again is not None
    assert again.event_id == example.event_id  # deterministic: a re-send is recognisable


def test_an_approval_carries_no_rejected_answer() -> None:
    event = judged(p=0.3)
    example = domain.curated_example(event, [decision("approved")], revision=1)
    assert example is not None
    assert example.answer == event.interaction.answer
    assert example.rejected_answer is None


def test_no_example_without_a_majority_of_approvals() -> None:
    event = judged()
    assert domain.curated_example(event, [decision("rejected")], revision=1) is None
    split = [decision("approved", "x"), decision("rejected")]
    assert domain.curated_example(event, split, revision=1) is None


def test_cohen_kappa_textbook_example() -> None:
    # Wikipedia: 50 items, 20 yes/yes, 15 no/no, 5 yes/no, 10 no/yes -> kappa = 0.4
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert domain.cohen_kappa(a, b) == pytest.approx(0.4)
    assert domain.cohen_kappa(["y", "y"], ["y", "y"]) == 1.0
    assert domain.cohen_kappa([], []) is None


def test_fleiss_kappa_wikipedia_example() -> None:
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    ratings = [[str(cat) for cat, n in enumerate(row) for _ in range(n)] for row in table]
    assert domain.fleiss_kappa(ratings) == pytest.approx(0.210, abs=0.001)


def test_pairwise_kappas_use_shared_items_only() -> None:
    labels = {
        1: {"a": "approved", "b": "approved"},
        2: {"a": "rejected", "b": "rejected"},
        3: {"a": "approved", "c": "rejected"},
    }
    pairs = {(x, y): (n, k) for x, y, n, k in domain.pairwise_kappas(labels)}
    assert pairs[("a", "b")] == (2, 1.0)
    assert ("b", "c") not in pairs


def test_password_hash_round_trip() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$")
    assert verify_password("correct horse battery", stored)
    assert not verify_password("wrong", stored)
    assert not verify_password("x", "garbage")


def test_sign_in_delays_start_after_the_free_failures_and_double_to_the_cap() -> None:
    backoff = domain.Backoff(free=5, first_s=1.0, max_s=30.0)
    assert [backoff.delay(n) for n in range(12)] == [0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay(10**6) == 30.0  # no overflow however long a flood goes on
