"""Reference evaluators that need no LLM: groundedness, relevance, agreement with approved answers.

Each blends embedding similarity (all-MiniLM-L6-v2 by default) with token overlap, and maps the
result onto the 1-5 scale so it can be compared with the LLM criteria.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from raftloop_core.events import CriterionScore
from raftloop_judge.domain import Embedder, Reference, unit_to_score

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_STOP = (
    "a an and are as at be by can do for from has have how i in is it its of on or our that the "
    "their them then there these they this to was we were what when where which who will with "
    "you your yes no not"
)
STOPWORDS = frozenset(_STOP.split())
MAX_SENTENCES = 20


def content_tokens(text: str) -> set[str]:
    """Lower-cased words that carry meaning (no stopwords, no single letters)."""
    return {w for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in STOPWORDS}


def coverage(part: set[str], whole: set[str]) -> float:
    """Share of `part`'s tokens found in `whole` (1.0 when `part` is empty)."""
    return len(part & whole) / len(part) if part else 1.0


def token_f1(a: str, b: str) -> float:
    """Token-set F1 between two texts."""
    x, y = content_tokens(a), content_tokens(b)
    if not x or not y:
        return 0.0
    common = len(x & y)
    if common == 0:
        return 0.0
    p, r = common / len(x), common / len(y)
    return 2 * p * r / (p + r)


def rescale(cosine: float, low: float, high: float) -> float:
    """Map a cosine similarity onto [0, 1] between a floor and a ceiling."""
    return min(1.0, max(0.0, (cosine - low) / (high - low)))


def sentences(text: str) -> list[str]:
    """The answer's sentences (bounded)."""
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()][:MAX_SENTENCES] or [text]


def groundedness(
    sent_vecs: np.ndarray, chunk_vecs: np.ndarray, answer: str, chunks: Sequence[str]
) -> float:
    """Support of the answer in the chunks, in [0, 1]: best chunk per sentence, plus overlap."""
    per_sentence = (sent_vecs @ chunk_vecs.T).max(axis=1)
    semantic = float(np.mean([rescale(float(c), 0.25, 0.75) for c in per_sentence]))
    lexical = coverage(content_tokens(answer), content_tokens(" ".join(chunks)))
    return 0.6 * semantic + 0.4 * lexical


def relevance(q_vec: np.ndarray, a_vec: np.ndarray, question: str, answer: str) -> float:
    """How much the answer is about the question, in [0, 1]."""
    semantic = rescale(float(q_vec @ a_vec), 0.1, 0.7)
    lexical = coverage(content_tokens(question), content_tokens(answer))
    return 0.7 * semantic + 0.3 * lexical


def nearest(q_vec: np.ndarray, refs: Sequence[Reference]) -> tuple[Reference, float] | None:
    """The approved answer whose question is most similar, with the similarity."""
    if not refs:
        return None
    matrix = np.asarray([r.embedding for r in refs], dtype=np.float32)
    sims = matrix @ q_vec
    best = int(np.argmax(sims))
    return refs[best], float(sims[best])


class ReferenceEvaluator:
    """Scores groundedness, relevance and agreement without an LLM."""

    def __init__(self, embedder: Embedder, near_duplicate: float = 0.9) -> None:
        self.embedder = embedder
        self.near_duplicate = near_duplicate

    async def embed_question(self, question: str) -> list[float]:
        """The embedding stored with an approved answer."""
        [vec] = await self.embedder.encode([question])
        return vec

    async def evaluate(
        self, question: str, answer: str, chunks: list[str], refs: Sequence[Reference]
    ) -> list[CriterionScore]:
        """Every reference score that applies to this interaction."""
        sents = sentences(answer)
        wanted = [question, answer, *sents, *chunks]
        unique = list(dict.fromkeys(wanted))  # a one-sentence answer is embedded once
        encoded = await self.embedder.encode(unique)
        by_text = dict(zip(unique, encoded, strict=True))
        vecs = np.asarray([by_text[t] for t in wanted], dtype=np.float32)
        q_vec, a_vec = vecs[0], vecs[1]
        sent_vecs, chunk_vecs = vecs[2 : 2 + len(sents)], vecs[2 + len(sents) :]
        out = [_score("ref_relevance", relevance(q_vec, a_vec, question, answer))]
        if chunks:
            support = groundedness(sent_vecs, chunk_vecs, answer, chunks)
            out.append(_score("ref_groundedness", support))
        match = nearest(q_vec, refs)
        if match is not None and match[1] >= self.near_duplicate:
            ref, sim = match
            [ref_vec] = await self.embedder.encode([ref.answer])
            agree = 0.6 * rescale(float(np.asarray(ref_vec) @ a_vec), 0.3, 0.9)
            agree += 0.4 * token_f1(answer, ref.answer)
            out.append(
                _score("ref_agreement", agree, f"vs approved {ref.reference_id} ({sim:.2f})")
            )
        return out


def _score(name: str, unit: float, rationale: str | None = None) -> CriterionScore:
    return CriterionScore(
        criterion=name,
        score=round(unit_to_score(unit), 4),
        rationale=rationale,
        evaluator="reference",
    )
