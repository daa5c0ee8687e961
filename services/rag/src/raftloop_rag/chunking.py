"""Structure-aware chunking (pure): headings stay with their text, sentences are never cut.

A document is split into sections at markdown headings (`#` .. `######`, outside code fences);
text extracted from html, pdf or txt has no markup left, so there a short line that does not
end like a sentence (e.g. "Where we ship", "RESPONSE TIMES") is taken as a heading.
Each chunk carries its heading path ("Title > Section > Subsection") as its first line, so a
chunk is understandable, and retrievable, on its own. Within a section, sentences are packed
greedily up to the token budget of the embedding model; consecutive chunks of one section share
up to `overlap_tokens` of trailing sentences. A sentence longer than the budget is split at
words (and a word longer than the budget at characters), so no chunk is ever truncated by the
model.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from raftloop_rag.domain import TokenCounter

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_PLAIN_HEADING = re.compile(r"^[A-Z0-9][^.!?,;:)]{0,58}[^.!?,;:\s]$")
PLAIN_HEADING_WORDS = 8
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
PATH_SEPARATOR = " > "


@dataclass(frozen=True)
class ChunkingPolicy:
    """How big chunks are and how much consecutive chunks share, in model tokens."""

    max_tokens: int = 200
    overlap_tokens: int = 32

    def __post_init__(self) -> None:
        if self.max_tokens < 16:
            raise ValueError(f"max_tokens must be at least 16, got {self.max_tokens}")
        if not 0 <= self.overlap_tokens < self.max_tokens // 2:
            raise ValueError(
                f"overlap_tokens must be in [0, max_tokens/2), got {self.overlap_tokens}"
            )


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, as embedded and as returned."""

    index: int
    text: str
    heading: str


@dataclass(frozen=True)
class _Section:
    headings: tuple[str, ...]
    paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    paragraph: int


def _plain_heading(line: str) -> bool:
    stripped = line.strip()
    return bool(_PLAIN_HEADING.match(stripped)) and len(stripped.split()) <= PLAIN_HEADING_WORDS


def sections(text: str, *, plain_headings: bool = False) -> list[_Section]:
    """Split text at headings (markdown; also plain-text ones if asked), never inside fences."""
    found: list[_Section] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    in_fence = False

    def flush() -> None:
        paragraphs = _paragraphs(lines)
        if paragraphs:
            found.append(_Section(tuple(h for _, h in path), paragraphs))
        lines.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING.match(line)
        if heading is not None:
            level, name = len(heading.group(1)), heading.group(2).strip()
        elif plain_headings and not in_fence and _plain_heading(line):
            level, name = 2, line.strip()
        else:
            lines.append(line)
            continue
        flush()
        path[:] = [(lvl, h) for lvl, h in path if lvl < level]
        path.append((level, name))
    flush()
    return found


def _paragraphs(lines: list[str]) -> tuple[str, ...]:
    out: list[str] = []
    current: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            out.append(" ".join(current))
            current = []
    return tuple(out)


def heading_path(title: str, headings: tuple[str, ...]) -> str:
    """The breadcrumb a chunk starts with; the title is not repeated when it is the h1."""
    parts = list(headings)
    if title and (not parts or parts[0].casefold() != title.casefold()):
        parts.insert(0, title)
    return PATH_SEPARATOR.join(parts)


def chunk_text(
    text: str,
    *,
    title: str,
    count: TokenCounter,
    policy: ChunkingPolicy,
    plain_headings: bool = False,
) -> list[Chunk]:
    """Chunk a document's clean text; chunk indexes are 0..n-1 in reading order."""
    chunks: list[Chunk] = []
    for section in sections(text, plain_headings=plain_headings):
        path = heading_path(title, section.headings)
        [path_tokens] = count([path]) if path else [0]
        if path_tokens > policy.max_tokens // 2:
            path = section.headings[-1] if section.headings else ""
            [path_tokens] = count([path]) if path else [0]
            path = path if path_tokens <= policy.max_tokens // 2 else ""
            path_tokens = path_tokens if path else 0
        budget = policy.max_tokens - path_tokens
        units = _units(section.paragraphs, count, budget)
        for body in _pack(units, budget, policy.overlap_tokens):
            text_ = f"{path}\n\n{body}" if path else body
            chunks.append(Chunk(index=len(chunks), text=text_, heading=path))
    if not chunks and text.strip():
        # Only headings, no body: keep the headings themselves, so the document is findable.
        flat = " ".join(text.split())
        units = _units((flat,), count, policy.max_tokens)
        chunks = [Chunk(i, body, "") for i, body in enumerate(_pack(units, policy.max_tokens, 0))]
    return chunks


def _units(paragraphs: tuple[str, ...], count: TokenCounter, budget: int) -> list[_Unit]:
    pieces: list[tuple[str, int]] = []
    for number, paragraph in enumerate(paragraphs):
        pieces.extend((s, number) for s in _SENTENCE_END.split(paragraph) if s.strip())
    tokens = count([p for p, _ in pieces]) if pieces else []
    units: list[_Unit] = []
    for (piece, number), n in zip(pieces, tokens, strict=True):
        if n <= budget:
            units.append(_Unit(piece, n, number))
        else:
            units.extend(_Unit(t, c, number) for t, c in _split_long(piece, count, budget))
    return units


def _split_long(sentence: str, count: TokenCounter, budget: int) -> list[tuple[str, int]]:
    """Split an over-long sentence at words, and an over-long word at characters."""
    words: list[tuple[str, int]] = []
    for word, n in zip(sentence.split(), count(sentence.split()), strict=True):
        if n <= budget:
            words.append((word, n))
            continue
        step = max(1, len(word) * budget // (2 * n))
        parts = [word[i : i + step] for i in range(0, len(word), step)]
        words.extend(zip(parts, count(parts), strict=True))
    out: list[tuple[str, int]] = []
    current: list[str] = []
    used = 0
    for word, n in words:
        if current and used + n > budget:
            out.append((" ".join(current), used))
            current, used = [], 0
        current.append(word)
        used += n
    if current:
        out.append((" ".join(current), used))
    return out


def _pack(units: list[_Unit], budget: int, overlap: int) -> list[str]:
    """Greedy packing; each new chunk starts with the previous one's trailing sentences."""
    bodies: list[str] = []
    current: list[_Unit] = []
    used = 0
    fresh = 0  # units in `current` that no earlier chunk contains
    for unit in units:
        if current and used + unit.tokens > budget:
            bodies.append(_join(current))
            current = _tail(current, overlap, budget - unit.tokens)
            used = sum(u.tokens for u in current)
            fresh = 0
        current.append(unit)
        used += unit.tokens
        fresh += 1
    if current and fresh:
        bodies.append(_join(current))
    return bodies


def _tail(units: list[_Unit], overlap: int, room: int) -> list[_Unit]:
    tail: list[_Unit] = []
    used = 0
    for unit in reversed(units):
        if used + unit.tokens > min(overlap, room):
            break
        tail.insert(0, unit)
        used += unit.tokens
    return tail


def _join(units: list[_Unit]) -> str:
    out = units[0].text
    for previous, unit in itertools.pairwise(units):
        out += ("\n\n" if unit.paragraph != previous.paragraph else " ") + unit.text
    return out
