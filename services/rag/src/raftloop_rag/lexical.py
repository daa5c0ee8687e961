"""The lexical (BM25) side of hybrid search: texts to sparse vectors that Qdrant scores.

BM25 is split the way Qdrant's own BM25 model does it: each chunk's sparse vector holds the
term-frequency part of BM25 (saturated by k1, normalised for length by b), and the collection's
sparse vector has `Modifier.IDF`, so Qdrant multiplies in the inverse document frequency from
the live collection at query time. IDF therefore stays right as documents come and go, without
re-indexing. A query's sparse vector is 1.0 for each of its distinct terms.

Tokens come from bm25s's tokenizer (words of two or more letters or digits, lower-cased,
Lucene's English stopwords) with the Snowball English stemmer (PyStemmer), so "VB-720" is "vb"
and "720", and "backups" meets "backup". Both ship in their wheels: nothing is downloaded.
A term's index is the CRC-32 of its text, stable across processes and versions (Python's
`hash` is salted per process).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Sequence

import bm25s  # type: ignore[import-untyped]  # bm25s ships no type information
import Stemmer  # type: ignore[import-not-found]  # nor does PyStemmer

from raftloop_rag.domain import SparseVector

K1 = 1.2
B = 0.75
AVERAGE_TERMS = 60.0
"""Length normalisation's average chunk length, in terms: fixed (Qdrant's server sees no corpus
statistics when a vector is built), near the demo handbook's 128-token chunks after stemming
and stopwords."""

SIGNATURE = f"bm25s-snowball-en/crc32/k1={K1}/b={B}/avg={AVERAGE_TERMS}"
"""What a stored sparse vector was built with; a collection records it to know it is current."""


class Bm25sSparseEncoder:
    """bm25s tokens and PyStemmer stems, weighted as BM25's term-frequency part."""

    name = SIGNATURE

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english")

    def _terms(self, texts: Sequence[str]) -> list[list[str]]:
        tokens = bm25s.tokenize(
            list(texts),
            stopwords="en",
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )
        return [list(t) for t in tokens]

    def documents(self, texts: Sequence[str]) -> list[SparseVector]:
        """One sparse vector per stored chunk: BM25's saturated, length-normalised tf."""
        if not texts:
            return []
        vectors = []
        for terms in self._terms(texts):
            counts = dict(sorted(_by_index(Counter(terms)).items()))  # Qdrant wants them sorted
            norm = K1 * (1 - B + B * len(terms) / AVERAGE_TERMS)
            vectors.append(
                SparseVector(
                    indices=list(counts),
                    values=[tf * (K1 + 1) / (tf + norm) for tf in counts.values()],
                )
            )
        return vectors

    def query(self, text: str) -> SparseVector:
        """A question's sparse vector: each distinct term once (Qdrant adds its IDF)."""
        [terms] = self._terms([text])
        indices = sorted({_index(t) for t in terms})
        return SparseVector(indices=indices, values=[1.0] * len(indices))


def _index(term: str) -> int:
    return zlib.crc32(term.encode("utf-8"))


def _by_index(counts: Counter[str]) -> dict[int, int]:
    """Term counts keyed by index; the (unlikely) CRC-32 collisions add up."""
    merged: dict[int, int] = {}
    for term, count in counts.items():
        index = _index(term)
        merged[index] = merged.get(index, 0) + count
    return merged
