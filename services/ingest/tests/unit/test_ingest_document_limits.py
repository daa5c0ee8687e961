"""Documents within limits: parsing limits, the sandbox, events that fit a message, symlinks."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from ingest_pdf import pdf_bomb

from raftloop_core.events import DocumentSubmitted
from raftloop_ingest.documents import DocumentTooLarge, ParseLimits, expand, parse
from raftloop_ingest.parts import EventTooLarge, event_size, split_text, submitted_events
from raftloop_ingest.sandbox import ParseTimeout, SandboxedParser, SandboxLimits

# ---------------------------------------------------------------- parsing limits


def test_a_pdf_bomb_is_refused_in_milliseconds_naming_the_setting() -> None:
    bomb = pdf_bomb(74_000_000)
    assert len(bomb) < 250_000
    started = time.monotonic()
    with pytest.raises(DocumentTooLarge) as refused:
        parse("bomb.pdf", bomb)
    assert time.monotonic() - started < 5  # it took 40 s before #18
    message = str(refused.value)
    assert message.startswith("bomb.pdf: ")
    assert "50,000,000" in message
    assert "INGEST_PARSE_MAX_DECOMPRESSED_BYTES" in message


def test_the_decompressed_budget_counts_every_page() -> None:
    # Each page's stream is small; together they inflate past the budget.
    many = pdf_bomb(600_000, pages=3)
    limits = ParseLimits(max_decompressed_bytes=1_000_000)
    with pytest.raises(DocumentTooLarge, match="page contents decompress to more than 1,000,000"):
        parse("many.pdf", many, limits)


def test_too_many_pages_are_refused_before_any_is_read() -> None:
    with pytest.raises(DocumentTooLarge, match="3 pages, over the 2-page limit"):
        parse("long.pdf", pdf_bomb(1_000, pages=3), ParseLimits(max_pages=2))


def test_text_over_the_limit_is_refused_with_what_to_do() -> None:
    text = ("A paragraph of words. " * 10 + "\n\n") * 100
    with pytest.raises(DocumentTooLarge) as refused:
        parse("notes.txt", text.encode(), ParseLimits(max_text_bytes=10_000))
    message = str(refused.value)
    assert "notes.txt: its extracted text is" in message
    assert "10,000-byte limit (INGEST_MAX_TEXT_BYTES)" in message
    assert "split the document" in message


# ---------------------------------------------------------------- the sandbox


@pytest.fixture(scope="module")
def sandbox() -> SandboxedParser:
    return SandboxedParser(SandboxLimits(ParseLimits()))


async def test_the_sandbox_parses_like_the_parser(sandbox: SandboxedParser) -> None:
    data = b"# Refunds\n\nRefunds take **five** days."
    assert await sandbox.parse("refunds.md", data) == parse("refunds.md", data)


async def test_the_sandbox_returns_the_parsers_errors(sandbox: SandboxedParser) -> None:
    with pytest.raises(DocumentTooLarge, match="INGEST_PARSE_MAX_DECOMPRESSED_BYTES"):
        await sandbox.parse("bomb.pdf", pdf_bomb(74_000_000))
    with pytest.raises(ValueError, match="unsupported file type"):
        await sandbox.parse("x.exe", b"MZ")


async def test_a_slow_parse_is_stopped_at_the_deadline() -> None:
    slow = SandboxedParser(SandboxLimits(ParseLimits(max_decompressed_bytes=10**9), timeout_s=1.0))
    started = time.monotonic()
    with pytest.raises(ParseTimeout) as stopped:
        await slow.parse("slow.pdf", pdf_bomb(30_000_000))
    assert time.monotonic() - started < 10
    assert "slow.pdf: parsing took longer than 1 s (INGEST_PARSE_TIMEOUT_S)" in str(stopped.value)


async def test_a_parse_over_the_memory_limit_is_refused() -> None:
    small = SandboxedParser(
        SandboxLimits(
            ParseLimits(max_decompressed_bytes=10**9), timeout_s=60, max_memory_bytes=300_000_000
        )
    )
    with pytest.raises(DocumentTooLarge, match="300,000,000-byte memory limit"):
        await small.parse("big.pdf", pdf_bomb(30_000_000))


# ---------------------------------------------------------------- events that fit


def whole(text: str, **kw: object) -> DocumentSubmitted:
    fields: dict[str, object] = {
        "tenant": "acme",
        "document_id": "d" * 32,
        "source": "upload:handbook.md",
        "title": "Handbook",
        "text": text,
        "content_hash": hashlib.sha256(text.encode()).hexdigest(),
        "format": "md",
        "metadata": {"filename": "handbook.md"},
    }
    return DocumentSubmitted.model_validate(fields | kw)


def test_a_document_that_fits_is_one_event() -> None:
    event = whole("Short text.")
    assert submitted_events(event, 1_000_000) == [event]
    assert (event.part, event.parts) == (0, 1)


def test_a_long_document_becomes_parts_that_each_fit_the_message_limit() -> None:
    # Quotes, newlines and non-ASCII letters take more bytes in JSON than in the text.
    paragraph = 'Rückerstattung "innerhalb" von fünf Tagen.\n' * 40
    text = "\n\n".join(f"## Section {i}\n\n{paragraph}" for i in range(60))
    limit = 20_000
    events = submitted_events(whole(text), limit)

    assert len(events) > 5
    for event in events:
        wire = event.model_dump_json().encode()
        assert len(wire) == event_size(event) <= limit
        assert (event.parts, event.content_hash) == (len(events), whole(text).content_hash)
    assert [e.part for e in events] == list(range(len(events)))
    assert len({e.event_id for e in events}) == len(events)
    assert "\n\n".join(e.text for e in events) == text  # cut at paragraph breaks only
    assert all(e.text.startswith("## Section") for e in events)


def test_split_text_cuts_lines_then_words_then_characters() -> None:
    one_line = "word " * 5_000
    pieces = split_text(one_line, 1_000)
    assert all(len(json.dumps(p, ensure_ascii=False)) - 2 <= 1_000 for p in pieces)
    assert " ".join(pieces).split() == one_line.split()
    unbroken = "x" * 3_500
    assert split_text(unbroken, 1_000) == ["x" * 1_000] * 3 + ["x" * 500]
    emoji = "\U0001f600" * 1_000  # four bytes each
    assert "".join(split_text(emoji, 1_000)) == emoji


def test_a_title_that_crowds_out_the_text_is_refused() -> None:
    event = whole("text " * 1_000, metadata={"notes": "m" * 5_000})
    with pytest.raises(EventTooLarge, match=r"of the 6,000 bytes one message may hold"):
        submitted_events(event, 6_000)


# ---------------------------------------------------------------- folders and links


def test_a_link_out_of_the_folder_is_refused_and_labels_hold_no_server_path(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "kb"
    (folder / "guides").mkdir(parents=True)
    (folder / "guides" / "refunds.md").write_text("# Refunds\n\nFive days.")
    (folder / "faq.txt").write_text("FAQ")
    secret = tmp_path / "outside" / "credentials.txt"
    secret.parent.mkdir()
    secret.write_text("db password: hunter22")
    (folder / "leak.txt").symlink_to(secret)
    (folder / "elsewhere").symlink_to(secret.parent, target_is_directory=True)
    (folder / "alias.md").symlink_to(folder / "guides" / "refunds.md")  # stays inside: fine

    files, errors = expand([folder])

    assert sorted(label for _, label in files) == ["alias.md", "faq.txt", "guides/refunds.md"]
    assert all(secret != path.resolve() for path, _ in files)
    assert len(errors) == 2
    leak = next(e for e in errors if "leak.txt" in e)
    assert leak.startswith(f"{folder / 'leak.txt'}: a symbolic link to {secret}, outside {folder}")
    assert "refused" in leak
    assert any(e.startswith(f"{folder / 'elsewhere'}: a symbolic link") for e in errors)


def test_a_file_named_explicitly_is_labelled_by_its_name(tmp_path: Path) -> None:
    doc = tmp_path / "deep" / "er" / "policy.md"
    doc.parent.mkdir(parents=True)
    doc.write_text("# Policy")
    assert expand([doc]) == ([(doc, "policy.md")], [])
