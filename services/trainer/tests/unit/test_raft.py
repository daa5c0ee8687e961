from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from raftloop_trainer.builder import build_set, oracle_keep_probability
from raftloop_trainer.encoding import IGNORE_INDEX, encode_example, render_prompt
from raftloop_trainer.raft import (
    BEGIN_QUOTE,
    END_QUOTE,
    Chunk,
    RaftSource,
    best_quote,
    build_example,
    clean_distractors,
    example_rng,
    final_answer,
)

ORACLE = Chunk(
    "refunds#0",
    "Refunds go back to the original card. They are issued within five business days of the "
    "return arriving. Shipping fees are not refunded.",
    "refunds",
    "Refund policy",
)
DISTRACTORS = [
    Chunk("support#0", "Support is open Monday to Friday, 9 to 5.", "support"),
    Chunk("plans#1", "The Personal plan costs $6 per month.", "plans"),
    Chunk("plans#2", "The Family plan covers up to five people.", "plans"),
]
SOURCE = RaftSource("ex-1", "How long do refunds take?", "Within five business days.", (ORACLE,))


def test_oracle_is_kept_with_probability_p() -> None:
    rng = random.Random(7)
    draws = [build_example(SOURCE, DISTRACTORS, rng=rng, p_oracle=0.8) for _ in range(4000)]
    kept = sum(e.oracle_kept for e in draws) / len(draws)
    assert kept == pytest.approx(0.8, abs=0.025)
    for e in draws[:200]:
        assert ("refunds#0" in e.document_ids) == e.oracle_kept


def test_quote_is_taken_verbatim_from_the_oracle() -> None:
    example = build_example(SOURCE, DISTRACTORS, rng=random.Random(0), p_oracle=1.0)
    target = example.target
    quote = target.split(BEGIN_QUOTE, 1)[1].split(END_QUOTE, 1)[0]
    assert quote in ORACLE.text
    assert quote == "They are issued within five business days of the return arriving."
    assert target.endswith("Answer: Within five business days.")
    assert final_answer(target) == "Within five business days."


def test_no_quote_when_the_oracle_is_dropped() -> None:
    example = build_example(SOURCE, DISTRACTORS, rng=random.Random(0), p_oracle=0.0)
    assert not example.oracle_kept
    assert BEGIN_QUOTE not in example.target
    assert ORACLE.text not in example.messages[-2]["content"]
    assert final_answer(example.target) == "Within five business days."


def test_best_quote_ties_go_to_the_first_sentence() -> None:
    assert best_quote("Alpha one. Beta two.", "nothing shared") == "Alpha one."


def test_distractors_never_include_the_oracle() -> None:
    copy = Chunk("other-id", ORACLE.text, "refunds")
    containing = Chunk("bigger", "Intro. " + ORACLE.text + " Outro.", "refunds")
    candidates = [ORACLE, copy, containing, *DISTRACTORS, DISTRACTORS[0]]
    kept = clean_distractors([ORACLE], candidates, k=5)
    assert [c.chunk_id for c in kept] == ["support#0", "plans#1", "plans#2"]


def test_documents_are_shuffled_and_builds_are_reproducible() -> None:
    orders = {
        build_example(SOURCE, DISTRACTORS, rng=example_rng(1, str(i)), p_oracle=1.0).document_ids
        for i in range(30)
    }
    assert len(orders) > 5
    a = build_example(SOURCE, DISTRACTORS, rng=example_rng(3, "x"), p_oracle=0.8)
    b = build_example(SOURCE, DISTRACTORS, rng=example_rng(3, "x"), p_oracle=0.8)
    assert a == b


def test_history_is_kept_before_the_question() -> None:
    source = RaftSource(
        "ex-2",
        "And for the Family plan?",
        "Five people.",
        (DISTRACTORS[2],),
        ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}),
    )
    example = build_example(source, DISTRACTORS[:1], rng=random.Random(0), p_oracle=1.0)
    roles = [m["role"] for m in example.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert example.messages[3]["content"].endswith("Question: And for the Family plan?")


def test_chat_template_is_applied_and_labels_cover_only_the_answer(
    tiny_model_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    example = build_example(SOURCE, DISTRACTORS, rng=random.Random(0), p_oracle=1.0)
    prompt = render_prompt(tokenizer, example.prompt)
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("<|im_start|>assistant\n")
    encoded = encode_example(tokenizer, example.messages, max_length=1024)
    labelled = [t for t in encoded["labels"] if t != IGNORE_INDEX]
    text = tokenizer.decode(labelled)
    assert isinstance(text, str)
    assert text.replace(" ", "") == (example.target + "<|im_end|>").replace(" ", "")
    assert len(encoded["labels"]) == len(encoded["input_ids"])


def test_long_prompts_are_cut_in_the_middle_never_the_answer(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    many = [Chunk(f"d{i}", f"Filler document number {i} about nothing. " * 8) for i in range(20)]
    example = build_example(SOURCE, many, rng=random.Random(0), p_oracle=1.0)
    encoded = encode_example(tokenizer, example.messages, max_length=200)
    assert len(encoded["input_ids"]) == 200
    labelled = [t for t in encoded["labels"] if t != IGNORE_INDEX]
    text = tokenizer.decode(labelled)
    assert isinstance(text, str)
    assert text.replace(" ", "").startswith("Thedocumentssay")


def test_best_quote_never_runs_a_heading_into_the_sentence_under_it() -> None:
    chunk = (
        "Billing and Payments\n\n"
        "To fix a failed payment, update your card. Backups resume within 10 minutes."
    )
    assert best_quote(chunk, "within 10 minutes") == "Backups resume within 10 minutes."
    assert best_quote(chunk, "update your card") == "To fix a failed payment, update your card."


class _FixedDistractors:
    """Hands back the same distractors for any question (the builder's pure logic only)."""

    def distractors(
        self, question: str, *, k: int, exclude_ids: Sequence[str], tenant: str
    ) -> list[Chunk]:
        return [c for c in DISTRACTORS if c.chunk_id not in exclude_ids][:k]


def test_examples_without_a_retrieved_oracle_count_toward_the_dropped_share() -> None:
    with_oracle = [
        RaftSource(f"ex-{i}", SOURCE.question, SOURCE.answer, (ORACLE,)) for i in range(800)
    ]
    without = [RaftSource(f"no-{i}", SOURCE.question, SOURCE.answer, ()) for i in range(200)]
    built = build_set(with_oracle + without, _FixedDistractors(), k=1, p_oracle=0.8, seed=1)
    # A fifth of the examples has no oracle already: every other one keeps it.
    assert sum(e.oracle_kept for e in built) == 800
    built = build_set(
        with_oracle[:500] + without[:50], _FixedDistractors(), k=1, p_oracle=0.8, seed=1
    )
    shown = sum(e.oracle_kept for e in built) / 550
    assert shown == pytest.approx(0.8, abs=0.04)
    assert oracle_keep_probability(0, 10, 0.8) == 0.8
    assert oracle_keep_probability(5, 10, 0.8) == 1.0
