"""Knowledge documents to clean text: txt, md (markdown-it), html (BeautifulSoup), pdf (pypdf)."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

from bs4 import BeautifulSoup
from markdown_it import MarkdownIt
from pypdf import PdfReader
from pypdf.errors import PyPdfError

Format = Literal["txt", "md", "html", "pdf"]
FORMATS: dict[str, Format] = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
_BLOCK_TAGS = (
    "p",
    "div",
    "br",
    "li",
    "tr",
    "pre",
    "blockquote",
    "section",
    "article",
    "table",
    "ul",
    "ol",
    "dd",
    "dt",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "main",
    "aside",
    "figcaption",
)
_DROP_TAGS = ("script", "style", "noscript", "template", "svg", "nav", "header", "footer")
_BLANKS = re.compile(r"\n\s*\n+")
_SPACES = re.compile(r"[ \t\u00a0]+")
MAX_TITLE = 200


class DocumentError(ValueError):
    """A document cannot be read; the message says which and why."""


@dataclass(frozen=True)
class ParsedDocument:
    """Clean text and metadata of one document."""

    title: str
    text: str
    format: Format
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """sha256 of the extracted text."""
        return hashlib.sha256(self.text.encode()).hexdigest()


def format_of(name: str) -> Format:
    """The format of a file name, or a DocumentError naming the supported types."""
    fmt = FORMATS.get(PurePath(name).suffix.lower())
    if fmt is None:
        raise DocumentError(
            f"{name}: unsupported file type {PurePath(name).suffix or '(none)'!r}; "
            "supported: .txt, .md, .html, .pdf"
        )
    return fmt


def parse(name: str, data: bytes) -> ParsedDocument:
    """Extract clean text and metadata from a document's bytes.

    Raises:
        DocumentError: unknown type, undecodable text, a corrupt pdf, or no text at all.
    """
    fmt = format_of(name)
    stem = PurePath(name).stem
    if fmt == "pdf":
        title, text, extra = _pdf(name, data)
    else:
        raw = _decode(name, data)
        title, text, extra = {"txt": _txt, "md": _md, "html": _html}[fmt](raw)
    text = clean(text)
    if not text:
        raise DocumentError(f"{name}: no text could be extracted; is the file empty or scanned?")
    metadata = {"filename": PurePath(name).name, "bytes": str(len(data)), **extra}
    return ParsedDocument((title or stem).strip()[:MAX_TITLE], text, fmt, metadata)


def clean(text: str) -> str:
    """Normalise whitespace: single spaces in lines, at most one blank line between blocks."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def _decode(name: str, data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise DocumentError(f"{name}: looks binary (NUL bytes), not a text document")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{name}: not valid UTF-8 text ({exc.reason} at {exc.start})") from exc


def _txt(raw: str) -> tuple[str, str, dict[str, str]]:
    first = next((line.strip() for line in raw.splitlines() if line.strip()), "")
    return first, raw, {}


def _md(raw: str) -> tuple[str, str, dict[str, str]]:
    tokens = MarkdownIt("commonmark").parse(raw)
    title = ""
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.tag == "h1" and i + 1 < len(tokens):
            title = tokens[i + 1].content
            break
    html = MarkdownIt("commonmark").render(raw)
    return title, _visible_text(BeautifulSoup(html, "html.parser")), {}


def _html(raw: str) -> tuple[str, str, dict[str, str]]:
    soup = BeautifulSoup(raw, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if not title and (h1 := soup.find("h1")):
        title = h1.get_text(" ", strip=True)
    for tag in soup(_DROP_TAGS):
        tag.decompose()
    if soup.title:
        soup.title.decompose()
    return title, _visible_text(soup.body or soup), {}


def _visible_text(root: Any) -> str:
    """Text with line breaks at block boundaries only, so inline markup joins its words."""
    for tag in root.find_all(_BLOCK_TAGS):
        tag.insert_after("\n")
    text: str = root.get_text("")
    return text


def _pdf(name: str, data: bytes) -> tuple[str, str, dict[str, str]]:
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentError(f"{name}: not a readable PDF ({type(exc).__name__}: {exc})") from exc
    text = "\n\n".join(pages)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return str(meta_title) or first, text, {"pages": str(len(pages))}


def expand(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Files to read from the given files and folders, plus one error line per bad path.

    Folders are walked recursively for supported types; a file named explicitly with an
    unsupported type is an error.
    """
    files: list[Path] = []
    errors: list[str] = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS
            )
        elif path.is_file():
            files.append(path)
        elif path.exists():
            errors.append(f"{path}: not a regular file or folder")
        else:
            errors.append(f"{path}: no such file or folder")
    return files, errors
