"""Recovering the oracle of an example whose retrieval missed it, by the reviewer's answer."""

from __future__ import annotations

from collections.abc import Sequence

from raftloop_trainer.builder import answer_recall, recover_oracles
from raftloop_trainer.raft import Chunk, RaftSource

PLANS = Chunk("plans#2", "The Pro plan costs 12 dollars a month and covers five devices.", "plans")
BACKUPS = Chunk("ops#0", "Backups run every night at two.", "ops")


class KnowledgeBase:
    """A `DistractorSource` over two chunks that records what it was asked."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def distractors(
        self, question: str, *, k: int, exclude_ids: Sequence[str], tenant: str
    ) -> list[Chunk]:
        self.queries.append(question)
        return [BACKUPS, PLANS][:k]


def test_answer_recall_counts_each_answer_token_as_often_as_it_occurs() -> None:
    assert answer_recall("Pro costs 12 dollars.", PLANS.text) == 1.0
    assert answer_recall("12 dollars, 12 months", PLANS.text) == 0.5
    assert answer_recall("", PLANS.text) == 0.0


def test_a_missed_oracle_is_recovered_from_the_passage_that_holds_the_answer() -> None:
    kb = KnowledgeBase()
    missed = RaftSource("e1", "What is the price of Pro?", "Pro costs 12 dollars a month.", ())
    result, recovered = recover_oracles([missed], kb, tenant="acme", min_recall=0.8)
    assert recovered == 1
    assert result[0].oracle == (PLANS,)  # the second hit: the first does not hold the answer
    assert kb.queries == ["Pro costs 12 dollars a month."]  # searched by the answer


def test_what_has_an_oracle_is_short_or_is_not_in_the_kb_stays_as_it_was() -> None:
    kb = KnowledgeBase()
    sources = [
        RaftSource("e1", "Price?", "Pro costs 12 dollars.", (BACKUPS,)),  # reviewer found one
        RaftSource("e2", "Is it free?", "No.", ()),  # too short to find its passage by
        RaftSource("e3", "Who founded it?", "Ada and Grace founded it in 2019.", ()),
    ]
    result, recovered = recover_oracles(sources, kb, tenant="acme", min_recall=0.8)
    assert (result, recovered) == (sources, 0)
    assert kb.queries == ["Ada and Grace founded it in 2019."]
