"""The handbook itself: enough documents, in every format, with real text."""

import pytest
import raftloop_demo_kb as kb


def test_file_names_unique_and_titles_present() -> None:
    docs = kb.documents()
    assert len({doc.name for doc in docs}) == len(docs)
    for doc in docs:
        assert doc.title.strip(), doc.name
        assert doc.path.is_file()
        assert doc.path.parent == kb.docs_dir()


@pytest.mark.parametrize("doc", kb.documents(), ids=lambda doc: doc.name)
def test_document_has_sections_and_a_reasonable_length(doc: kb.DemoDocument) -> None:
    words = kb.document_text(doc.name).split()
    assert 200 <= len(words) <= 900, len(words)
    if doc.format == "pdf":
        assert doc.path.stat().st_size < 60_000
    if doc.format == "md":
        assert doc.path.read_text().count("\n## ") >= 2
    if doc.format == "html":
        html = doc.path.read_text()
        assert "<h1>" in html
        assert html.count("<h2>") >= 2
        assert "<p>" in html


def test_html_text_has_no_markup_left() -> None:
    for doc in kb.documents():
        if doc.format in ("html", "pdf"):
            text = kb.document_text(doc.name)
            assert "<p>" not in text
            assert "<h2>" not in text


def test_unknown_document_name_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="no demo document named"):
        kb.document("missing.md")


def test_lists_are_fresh_copies() -> None:
    first = kb.documents()
    first.clear()
    assert kb.documents()
