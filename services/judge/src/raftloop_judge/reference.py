"""Reference evaluators that need no LLM: groundedness, relevance, agreement with approved answers.

Each blends embedding similarity (all-MiniLM-L6-v2 by default) with token overlap, and maps the
result onto the 1-5 scale so it can be compared with the LLM criteria.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from raftloop_core.events import CriterionScore
from raftloop_judge.domain import Embedder, Reference, unit_to_score
from raftloop_judge.reference_index import Hit, ReferenceIndex

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


@dataclass(frozen=True)
class Texts:
    """What the reference evaluators embed of one interaction, in a fixed order."""

    question: str
    answer: str
    sentences: tuple[str, ...]
    chunks: tuple[str, ...]

    @classmethod
    def of(cls, question: str, answer: str, chunks: Sequence[str]) -> Texts:
        """The texts of a question, its answer (and the answer's sentences) and its chunks."""
        return cls(question, answer, tuple(sentences(answer)), tuple(chunks))

    @property
    def wanted(self) -> list[str]:
        """Question, answer, sentences, chunks: one vector each, in this order."""
        return [self.question, self.answer, *self.sentences, *self.chunks]


@dataclass(frozen=True)
class Match:
    """A near-duplicate approved answer: its question is at least `near_duplicate` similar."""

    hit: Hit
    answer_vec: np.ndarray


@dataclass(frozen=True)
class Embedded:
    """One interaction's texts with their vectors, and its near-duplicate approved answer."""

    texts: Texts
    vecs: np.ndarray  # one row per `texts.wanted`
    match: Match | None


@dataclass(frozen=True)
class Approved:
    """An approved answer to keep as a reference."""

    reference_id: str
    tenant: str
    question: str
    answer: str


class ReferenceEvaluator:
    """Scores groundedness, relevance and agreement without an LLM.

    A batch costs one embedding call for all its texts, one similarity search per tenant
    against that tenant's in-memory references, and one more embedding call for the
    near-duplicate answers not embedded before.
    """

    def __init__(
        self, embedder: Embedder, index: ReferenceIndex, near_duplicate: float = 0.9
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.near_duplicate = near_duplicate

    async def keep(self, approved: Sequence[Approved]) -> list[bool]:
        """Store approved answers (questions embedded in one call); False where already kept."""
        kept = [i for i, a in enumerate(approved) if a.question.strip() and a.answer.strip()]
        vecs = await self._encode([approved[i].question for i in kept])
        refs = [
            Reference(a.reference_id, a.tenant, a.question, a.answer, vec, datetime.now(UTC))
            for a, vec in zip((approved[i] for i in kept), vecs, strict=True)
        ]
        out = [False] * len(approved)
        for i, stored in zip(kept, await self.index.add(refs), strict=True):
            out[i] = stored
        return out

    async def _encode(self, texts: list[str]) -> list[list[float]]:
        return await self.embedder.encode(texts) if texts else []

    async def embed_many(self, items: Sequence[tuple[str, Texts]]) -> list[Embedded]:
        """Embed a batch of (tenant, texts) and find each one's near-duplicate approved answer."""
        if not items:
            return []
        # Identical texts of one tenant are embedded once (a one-sentence answer, a resent
        # question); tenants share nothing but the model.
        keys = list(dict.fromkeys((tenant, t) for tenant, texts in items for t in texts.wanted))
        encoded = await self.embedder.encode([t for _, t in keys])
        by_key = dict(zip(keys, np.asarray(encoded, dtype=np.float32), strict=True))
        vecs = [np.stack([by_key[(tenant, t)] for t in x.wanted]) for tenant, x in items]
        hits: list[Hit | None] = [None] * len(items)
        for tenant in dict.fromkeys(tenant for tenant, _ in items):
            rows = [i for i, (t, _) in enumerate(items) if t == tenant]
            found = await self.index.nearest(tenant, np.stack([vecs[i][0] for i in rows]))
            for i, hit in zip(rows, found, strict=True):
                hits[i] = hit
        matches = await self._matches([tenant for tenant, _ in items], hits)
        return [
            Embedded(texts, v, m) for (_, texts), v, m in zip(items, vecs, matches, strict=True)
        ]

    async def _matches(
        self, tenants: Sequence[str], hits: Sequence[Hit | None]
    ) -> list[Match | None]:
        """The near duplicates, with their answers' vectors (cached per tenant's reference)."""
        near = {
            (tenant, hit.reference_id): hit
            for tenant, hit in zip(tenants, hits, strict=True)
            if hit is not None and hit.similarity >= self.near_duplicate
        }
        vecs = {key: self.index.answer_vector(*key) for key in near}
        todo = [key for key, vec in vecs.items() if vec is None]
        encoded = await self._encode([near[key].answer for key in todo])
        for (tenant, ref_id), values in zip(todo, encoded, strict=True):
            answer_vec = np.asarray(values, dtype=np.float32)
            vecs[(tenant, ref_id)] = answer_vec
            self.index.keep_answer_vector(tenant, ref_id, answer_vec)
        out: list[Match | None] = []
        for tenant, hit in zip(tenants, hits, strict=True):
            found = vecs.get((tenant, hit.reference_id)) if hit is not None else None
            out.append(Match(hit, found) if hit is not None and found is not None else None)
        return out

    def score(self, embedded: Embedded) -> list[CriterionScore]:
        """Every reference score that applies to this interaction."""
        texts, vecs = embedded.texts, embedded.vecs
        question, answer, chunks = texts.question, texts.answer, list(texts.chunks)
        q_vec, a_vec = vecs[0], vecs[1]
        n = len(texts.sentences)
        sent_vecs, chunk_vecs = vecs[2 : 2 + n], vecs[2 + n :]
        out = [_score("ref_relevance", relevance(q_vec, a_vec, question, answer))]
        if chunks:
            support = groundedness(sent_vecs, chunk_vecs, answer, chunks)
            out.append(_score("ref_groundedness", support))
        match = embedded.match
        if match is not None:
            hit = match.hit
            agree = 0.6 * rescale(float(match.answer_vec @ a_vec), 0.3, 0.9)
            agree += 0.4 * token_f1(answer, hit.answer)
            out.append(
                _score(
                    "ref_agreement",
                    agree,
                    f"vs approved {hit.reference_id} ({hit.similarity:.2f})",
                )
            )
        return out


def _score(name: str, unit: float, rationale: str | None = None) -> CriterionScore:
    return CriterionScore(
        criterion=name,
        score=round(unit_to_score(unit), 4),
        rationale=rationale,
        evaluator="reference",
    )
