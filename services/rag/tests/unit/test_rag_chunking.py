import itertools
from collections.abc import Sequence

import pytest

from raftloop_rag.chunking import ChunkingPolicy, chunk_text, heading_path, sections


def words(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) for t in texts]


DOC = """# Refunds

Refunds are issued to the original payment method. They take five business days.

## Annual plans

Annual plans are refunded pro rata. Contact billing to start one.

```
# not a heading inside a fence
```

## Monthly plans

Monthly plans are not refunded.
"""


def test_sections_follow_headings_and_ignore_fenced_hashes() -> None:
    found = sections(DOC)
    assert [s.headings for s in found] == [
        ("Refunds",),
        ("Refunds", "Annual plans"),
        ("Refunds", "Monthly plans"),
    ]
    assert "# not a heading inside a fence" in " ".join(found[1].paragraphs)


def test_each_chunk_starts_with_its_heading_path() -> None:
    chunks = chunk_text(DOC, title="Refunds", count=words, policy=ChunkingPolicy(64, 8))
    assert [c.heading for c in chunks] == [
        "Refunds",
        "Refunds > Annual plans",
        "Refunds > Monthly plans",
    ]
    assert chunks[2].text == "Refunds > Monthly plans\n\nMonthly plans are not refunded."
    assert [c.index for c in chunks] == [0, 1, 2]


def test_title_is_prepended_when_the_document_has_no_h1() -> None:
    assert heading_path("Billing FAQ", ("Invoices",)) == "Billing FAQ > Invoices"
    assert heading_path("Billing FAQ", ()) == "Billing FAQ"
    assert heading_path("refunds", ("Refunds", "Annual")) == "Refunds > Annual"


def test_long_sections_respect_the_budget_and_overlap() -> None:
    sentences = [f"Sentence number {i} has exactly seven words." for i in range(40)]
    text = "# Long\n\n" + " ".join(sentences)
    policy = ChunkingPolicy(max_tokens=40, overlap_tokens=10)
    chunks = chunk_text(text, title="Long", count=words, policy=policy)
    assert len(chunks) > 5
    for chunk in chunks:
        assert words([chunk.text])[0] <= policy.max_tokens
    # Consecutive chunks share their boundary sentence; together they cover every sentence.
    for before, after in itertools.pairwise(chunks):
        last = before.text.split(". ")[-1].rstrip(".")
        assert last in after.text
    body = " ".join(c.text for c in chunks)
    assert all(s in body for s in sentences)


def test_an_overlong_sentence_is_split_at_words_and_never_exceeds_the_budget() -> None:
    text = "word " * 500 + "end."
    chunks = chunk_text(text, title="", count=words, policy=ChunkingPolicy(50, 0))
    assert all(words([c.text])[0] <= 50 for c in chunks)
    assert sum(words([c.text])[0] for c in chunks) == 501


def test_paragraph_breaks_survive_packing() -> None:
    text = "First paragraph here.\n\nSecond paragraph here."
    [chunk] = chunk_text(text, title="", count=words, policy=ChunkingPolicy(64, 0))
    assert chunk.text == "First paragraph here.\n\nSecond paragraph here."


def test_empty_documents_have_no_chunks() -> None:
    assert chunk_text("  \n\n ", title="T", count=words, policy=ChunkingPolicy()) == []


def test_a_document_of_headings_only_still_has_a_chunk() -> None:
    [chunk] = chunk_text("# Keep\n\n## Me", title="T", count=words, policy=ChunkingPolicy())
    assert chunk.text == "# Keep ## Me"


@pytest.mark.parametrize(("size", "overlap"), [(8, 0), (64, 32), (64, -1)])
def test_bad_policies_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        ChunkingPolicy(size, overlap)


def test_plain_text_headings_are_found_in_extracted_html_pdf_and_txt() -> None:
    text = (
        "Shipping Policy\n\nWe ship hubs.\n\nWhere we ship\nWe ship to Canada.\n"
        "RESPONSE TIMES\nEmail is answered in a day.\n- a list item\nA wrapped line that ends"
        " a sentence.\n"
    )
    found = sections(text, plain_headings=True)
    assert [s.headings for s in found] == [
        ("Shipping Policy",),
        ("Where we ship",),
        ("RESPONSE TIMES",),
    ]
    chunks = chunk_text(
        text, title="Shipping Policy", count=words, policy=ChunkingPolicy(), plain_headings=True
    )
    assert chunks[1].text.startswith("Shipping Policy > Where we ship\n\nWe ship to Canada.")
    assert [s.headings for s in sections(text)] == [()]
