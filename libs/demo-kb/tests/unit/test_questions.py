"""Every question is grounded in a verbatim passage of the document it names."""

import re
from collections import Counter

import raftloop_demo_kb as kb

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "from",
        "with",
        "within",
        "into",
        "per",
        "is",
        "are",
        "was",
        "be",
        "been",
        "can",
        "it",
        "its",
        "it's",
        "you",
        "your",
        "yours",
        "we",
        "our",
        "us",
        "i",
        "my",
        "me",
        "they",
        "them",
        "their",
        "this",
        "that",
        "these",
        "those",
        "as",
        "if",
        "then",
        "than",
        "so",
        "not",
        "no",
        "yes",
        "do",
        "does",
        "did",
        "has",
        "have",
        "had",
        "will",
        "would",
        "should",
        "may",
        "must",
        "which",
        "what",
        "when",
        "where",
        "who",
        "how",
        "there",
        "here",
        "up",
        "out",
        "about",
        "after",
        "before",
        "each",
        "any",
        "all",
    ]
)


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_ids_unique_and_well_formed() -> None:
    ids = [q.id for q in kb.questions()]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"q\d{4}", qid) for qid in ids)


def test_no_duplicate_questions() -> None:
    normalized = Counter(" ".join(q.question.lower().split()) for q in kb.questions())
    assert [text for text, n in normalized.items() if n > 1] == []


def test_every_passage_is_a_verbatim_substring_of_its_document() -> None:
    missing = [
        (q.id, q.document, q.passage)
        for q in kb.questions()
        if q.passage not in kb.document_text(q.document)
    ]
    assert missing == []


def test_markdown_and_text_passages_are_verbatim_in_the_raw_file() -> None:
    for q in kb.questions():
        doc = kb.document(q.document)
        if doc.format in ("md", "txt"):
            assert q.passage in doc.path.read_text(), q.id


def test_answers_are_short_and_grounded_in_their_passage() -> None:
    ungrounded = {}
    for q in kb.questions():
        assert 1 <= len(q.answer.split()) <= 25, q.id
        assert q.question.rstrip().endswith("?"), q.id
        extra = _tokens(q.answer) - STOPWORDS - _tokens(q.passage)
        if extra:
            ungrounded[q.id] = sorted(extra)
    assert ungrounded == {}


def test_passages_are_plain_sentences() -> None:
    for q in kb.questions():
        assert "<" not in q.passage, q.id
        assert "**" not in q.passage, q.id
        assert len(q.passage.split()) >= 3, q.id


def test_every_question_names_a_shipped_document() -> None:
    names = {doc.name for doc in kb.documents()}
    assert {q.document for q in kb.questions()} - names == set()
