"""The simulated reviewer's decisions (pure logic, no services)."""

from raftloop_cli.demo import AHEAD, STALL_S, Demo, Endpoints
from raftloop_cli.demo_review import SIMULATED, Reference, decide, oracle_chunks, token_f1

REF = Reference(
    question_id="q1",
    answer="within 5 business days",
    document="refunds.md",
    passage="Refunds are paid within 5 business days of the request.",
)
ORACLE = {
    "chunk_id": "refunds#2",
    "document_id": "abc",
    "source": "/kb/docs/refunds.md",
    "text": "Refunds\n\nRefunds are paid within 5 business days of the request. Fees stay.",
}
OTHER = {"chunk_id": "shipping#0", "source": "/kb/docs/shipping.md", "text": "Ships in 2 days."}


def test_token_f1_is_squad_normalised() -> None:
    assert token_f1("The answer: 5 days!", "5 days answer") == 1.0
    assert token_f1("nothing", "5 days") == 0.0
    assert token_f1("", "") == 1.0


def test_a_right_answer_is_approved_with_its_oracle_marked() -> None:
    served = (
        "The documents say: ##begin_quote##Refunds are paid...##end_quote##\n"
        "Answer: within 5 business days"
    )
    decision = decide(served, [OTHER, ORACLE], REF)
    assert decision.action == "approved"
    assert decision.answer is None
    assert decision.oracle_chunk_ids == ("refunds#2",)
    assert decision.reason.startswith(SIMULATED)


def test_a_wrong_answer_is_corrected_with_the_reference() -> None:
    decision = decide("Refunds take a month.", [ORACLE], REF)
    assert decision.action == "corrected"
    assert decision.answer == REF.answer
    assert decision.oracle_chunk_ids == ("refunds#2",)
    assert decision.f1 is not None
    assert decision.f1 < 0.6


def test_the_oracle_is_found_by_overlap_within_the_right_document_only() -> None:
    split = {"chunk_id": "refunds#3", "source": "refunds.md",
             "text": "paid within 5 business days of the request"}  # fmt: skip
    assert oracle_chunks([split], REF) == ("refunds#3",)
    lookalike = dict(split, chunk_id="x#0", source="other.md")
    assert oracle_chunks([lookalike], REF) == ()
    assert oracle_chunks([OTHER], REF) == ()


def test_an_unknown_interaction_is_skipped_not_guessed() -> None:
    decision = decide("anything", [ORACLE], None)
    assert decision.action == "skipped"
    assert decision.oracle_chunk_ids == ()


def test_the_chat_clients_wait_for_the_reviewers_unless_reviews_stall() -> None:
    demo = Demo(
        Endpoints(urls={}, client_key="c", internal_key="i", admin_key="a"),
        tenant="default",
        concurrency=2,
        timeout_s=60,
    )
    demo.tally.asked = AHEAD - 1
    assert not demo.ahead()
    demo.tally.asked = AHEAD + 2
    demo.tally.approved, demo.tally.corrected = 2, 1
    assert not demo.ahead()  # 3 reviewed: AHEAD - 1 waiting
    demo.tally.asked = AHEAD + 3
    assert demo.ahead()
    demo.last_review -= STALL_S + 1
    assert not demo.ahead()  # reviews stopped: do not stall the clients too
