"""The BM25 encoder: terms that lexical search can match, weights that saturate."""

from __future__ import annotations

import zlib

import pytest

from raftloop_rag.lexical import K1, Bm25sSparseEncoder


@pytest.fixture(scope="module")
def encoder() -> Bm25sSparseEncoder:
    return Bm25sSparseEncoder()


def index(term: str) -> int:
    return zlib.crc32(term.encode())


def test_an_error_code_becomes_terms_a_question_shares(encoder: Bm25sSparseEncoder) -> None:
    question = encoder.query("What causes error VB-720?")
    [chunk] = encoder.documents(["VB-720: your computer's clock is wrong. VB-721: disk full."])
    # "VB-720" is the terms "vb" and "720"; "causes" is stemmed to "caus".
    assert {index("vb"), index("720"), index("error"), index("caus")} <= set(question.indices)
    assert question.values == [1.0] * len(question.indices)
    assert {index("vb"), index("720"), index("721")} <= set(chunk.indices)
    assert len(set(question.indices) & set(chunk.indices)) == 2  # vb, 720


def test_stems_meet_and_stopwords_go(encoder: Bm25sSparseEncoder) -> None:
    [backups] = encoder.documents(["the backups"])
    assert backups.indices == [index("backup")] == encoder.query("backup").indices


def test_term_frequency_saturates_and_long_chunks_weigh_less(encoder: Bm25sSparseEncoder) -> None:
    once, thrice, long = encoder.documents(
        ["refund policy", "refund refund refund policy", "refund " + "word " * 200]
    )
    weight = {
        name: dict(zip(v.indices, v.values, strict=True))[index("refund")]
        for name, v in (("once", once), ("thrice", thrice), ("long", long))
    }
    assert weight["once"] < weight["thrice"] < K1 + 1  # BM25's ceiling
    assert weight["long"] < weight["once"]


def test_empty_and_stopword_texts_have_no_terms(encoder: Bm25sSparseEncoder) -> None:
    assert encoder.documents([]) == []
    assert encoder.query("the a of").indices == []
