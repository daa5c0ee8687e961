"""What the demo's simulated reviewer decides: pure code, no I/O.

It stands in for a person who knows the handbook: it approves an answer that says what the
reference answer says (marking the passage that supports it as the oracle), and corrects any
other answer with the reference answer and the oracle passage. Every decision it submits is
labelled as simulated in the reason.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

from raftloop_core.prompting import final_answer

SIMULATED = "simulated reviewer (raftloop demo)"
APPROVE_AT = 0.6
"""Token F1 against the reference at or above which the served answer is approved."""
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


@dataclass(frozen=True)
class Reference:
    """What the reviewer knows about a question: the answer and where the handbook says it."""

    question_id: str
    answer: str
    document: str
    passage: str


@dataclass(frozen=True)
class Decision:
    """A review to submit through the hitl API."""

    action: Literal["approved", "corrected", "skipped"]
    answer: str | None
    oracle_chunk_ids: tuple[str, ...]
    reason: str
    f1: float | None = None


def normalize(text: str) -> str:
    """SQuAD normalisation: lower-case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 of two answers."""
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def _same_document(chunk: Mapping[str, object], document: str) -> bool:
    names = {str(chunk.get(k) or "") for k in ("source", "title", "document_id")}
    stem = PurePath(document).stem
    return any(n and (PurePath(n).name == document or PurePath(n).stem == stem) for n in names)


def oracle_chunks(chunks: Sequence[Mapping[str, object]], ref: Reference) -> tuple[str, ...]:
    """The retrieved chunks that hold the reference passage (best match first, at most one)."""
    passage = normalize(ref.passage)
    for chunk in chunks:
        if passage and passage in normalize(str(chunk.get("text", ""))):
            return (str(chunk["chunk_id"]),)
    wanted = set(passage.split())
    best, best_share = None, 0.5  # a chunk must hold most of the passage's words
    for chunk in chunks:
        if not _same_document(chunk, ref.document):
            continue
        share = len(wanted & set(normalize(str(chunk.get("text", ""))).split())) / max(
            1, len(wanted)
        )
        if share > best_share:
            best, best_share = str(chunk["chunk_id"]), share
    return (best,) if best else ()


def decide(answer: str, chunks: Sequence[Mapping[str, object]], ref: Reference | None) -> Decision:
    """Approve a right answer, correct a wrong one, skip what is not a demo question."""
    if ref is None:
        return Decision("skipped", None, (), f"{SIMULATED}: not one of the demo's questions")
    oracle = oracle_chunks(chunks, ref)
    f1 = token_f1(final_answer(answer), ref.answer)
    if f1 >= APPROVE_AT:
        return Decision("approved", None, oracle, f"{SIMULATED}: matches the handbook", f1)
    return Decision(
        "corrected",
        ref.answer,
        oracle,
        f"{SIMULATED}: corrected with the handbook's answer ({ref.document})",
        f1,
    )
