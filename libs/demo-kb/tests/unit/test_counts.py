"""The size the demo, the end-to-end tests and the benchmarks rely on (issue 4, item 3)."""

import re
from collections import Counter

import raftloop_demo_kb as kb

MIN_DOCUMENTS = 32
MIN_PDFS = 4
MIN_QUESTIONS = 180
MIN_PER_DOCUMENT = 3


def test_enough_documents_in_every_format() -> None:
    docs = kb.documents()
    formats = Counter(doc.format for doc in docs)
    assert len(docs) >= MIN_DOCUMENTS, formats
    assert set(formats) == set(kb.FORMATS)
    assert formats["pdf"] >= MIN_PDFS
    assert formats["md"] == max(formats.values()), "markdown should be the majority format"


def test_enough_questions() -> None:
    questions = kb.questions()
    assert len(questions) >= MIN_QUESTIONS
    assert all(re.fullmatch(r"q\d{4}", q.id) for q in questions)


def test_every_document_has_at_least_three_questions() -> None:
    per_doc = Counter(q.document for q in kb.questions())
    thin = {
        doc.name: per_doc[doc.name]
        for doc in kb.documents()
        if per_doc[doc.name] < MIN_PER_DOCUMENT
    }
    assert thin == {}
