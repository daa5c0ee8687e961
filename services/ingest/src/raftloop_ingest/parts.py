"""A document as `DocumentSubmitted` events that each fit one broker message.

The broker refuses a message over `KAFKA_MAX_MESSAGE_BYTES`, and consumers park one as
poison, so a long document travels as several events in order: the text is cut before
headings or at paragraphs (then lines, words, characters), each part repeating the title,
metadata and the whole document's content hash. Sizes are measured exactly as the event is
sent (pydantic's compact JSON, where an escaped newline or quote takes two bytes). Pure: no
I/O here.
"""

from __future__ import annotations

import re
from uuid import uuid4

from pydantic_core import to_json

from raftloop_core.events import DocumentSubmitted

_SEPARATORS = (
    # (where to cut, what joined the pieces): before a markdown heading, so that a part starts
    # with its section's heading (rag builds each chunk's heading path from it), then at blank
    # lines, line breaks and spaces.
    (re.compile(r"\n\n(?=#{1,6} )"), "\n\n"),
    (re.compile(r"\n\n"), "\n\n"),
    (re.compile(r"\n"), "\n"),
    (re.compile(r" "), " "),
)
_PART_FIELDS_SLACK = 64
"""Room for the digits of `part`/`parts`, which the size of an empty part does not show."""
MIN_TEXT_BUDGET = 1_024
"""Parts smaller than this would mean title and metadata crowd out the text."""


class EventTooLarge(ValueError):
    """A document's events cannot fit the broker's message limit."""


def event_size(event: DocumentSubmitted) -> int:
    """Bytes of the event on the wire (what FastStream's pydantic serializer writes)."""
    return len(to_json(event))


def encoded_size(text: str) -> int:
    """Bytes `text` takes inside a JSON string (escapes included, quotes not)."""
    return len(to_json(text)) - 2


def submitted_events(whole: DocumentSubmitted, max_bytes: int) -> list[DocumentSubmitted]:
    """`whole` itself when it fits `max_bytes`, else its text split into parts that each fit.

    Raises:
        EventTooLarge: even a part with little text would not fit (huge title or metadata).
    """
    if event_size(whole) <= max_bytes:
        return [whole]
    empty = whole.model_copy(update={"text": ""})
    budget = max_bytes - event_size(empty) - _PART_FIELDS_SLACK
    if budget < MIN_TEXT_BUDGET:
        raise EventTooLarge(
            f"the document's title and metadata alone take {event_size(empty):,} of the "
            f"{max_bytes:,} bytes one message may hold (KAFKA_MAX_MESSAGE_BYTES)"
        )
    pieces = split_text(whole.text, budget)
    events = [
        whole.model_copy(
            update={"event_id": uuid4(), "text": piece, "part": i, "parts": len(pieces)}
        )
        for i, piece in enumerate(pieces)
    ]
    largest = max(event_size(e) for e in events)
    if largest > max_bytes:  # the slack above makes this unreachable; never send one anyway
        raise EventTooLarge(
            f"a part of the document takes {largest:,} bytes, over the {max_bytes:,}-byte "
            "message limit (KAFKA_MAX_MESSAGE_BYTES)"
        )
    return events


def split_text(text: str, budget: int) -> list[str]:
    """Pieces of `text` in order, each at most `budget` bytes JSON-encoded.

    Cut before headings where possible, else at blank lines, line breaks, spaces, and as a
    last resort inside a word; the separators at the cuts are dropped.
    """
    if budget < 16:
        raise ValueError(f"a budget of {budget} bytes cannot hold text")
    return [p for p in _split(text, budget, 0) if p.strip()]


def _split(text: str, budget: int, level: int) -> list[str]:
    if encoded_size(text) <= budget:
        return [text]
    if level == len(_SEPARATORS):
        return _cut(text, budget)
    cut, sep = _SEPARATORS[level]
    sep_size = encoded_size(sep)
    out: list[str] = []
    current: list[str] = []
    size = 0
    for unit in cut.split(text):
        unit_size = encoded_size(unit)
        if unit_size > budget:
            if current:
                out.append(sep.join(current))
                current, size = [], 0
            out += _split(unit, budget, level + 1)
            continue
        grown = size + unit_size + (sep_size if current else 0)
        if current and grown > budget:
            out.append(sep.join(current))
            current, size = [unit], unit_size
        else:
            current.append(unit)
            size = grown
    if current:
        out.append(sep.join(current))
    return out


def _cut(text: str, budget: int) -> list[str]:
    """Cut inside words: every character takes 1 to 12 encoded bytes."""
    out: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + budget)
        while encoded_size(text[start:end]) > budget:
            end = start + max(1, (end - start) // 2)
        out.append(text[start:end])
        start = end
    return out
