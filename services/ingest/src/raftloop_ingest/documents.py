"""Knowledge documents to clean text: txt, md (markdown-it), html (BeautifulSoup), pdf (pypdf).

`parse` trusts nothing about its input but does not protect the process it runs in: call it
through `sandbox.SandboxedParser`, which runs it in a child process with a wall-clock and a
memory limit. The limits here (`ParseLimits`) stop the cheap part of a bomb early, so that a
hostile file is refused in milliseconds rather than at the timeout.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

from bs4 import BeautifulSoup
from markdown_it import MarkdownIt
from pypdf import PdfReader, apply_configuration
from pypdf.errors import LimitReachedError, PyPdfError

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


class DocumentTooLarge(DocumentError):
    """A document is over one of the size limits; the message names the limit's setting."""


@dataclass(frozen=True)
class ParseLimits:
    """How much one document may cost to parse (settings `INGEST_MAX_TEXT_BYTES`, ...)."""

    max_text_bytes: int = 20_000_000
    max_pages: int = 2_000
    max_decompressed_bytes: int = 50_000_000


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


def parse(name: str, data: bytes, limits: ParseLimits | None = None) -> ParsedDocument:
    """Extract clean text and metadata from a document's bytes.

    Raises:
        DocumentTooLarge: the document is over one of `limits`.
        DocumentError: unknown type, undecodable text, a corrupt pdf, or no text at all.
    """
    limits = limits or ParseLimits()
    fmt = format_of(name)
    stem = PurePath(name).stem
    if fmt == "pdf":
        title, text, extra = _pdf(name, data, limits)
    else:
        raw = _decode(name, data)
        title, text, extra = {"txt": _txt, "md": _md, "html": _html}[fmt](raw)
    text = clean(text)
    if not text:
        raise DocumentError(f"{name}: no text could be extracted; is the file empty or scanned?")
    size, most = len(text.encode()), limits.max_text_bytes
    if size > most:
        raise DocumentTooLarge(
            f"{name}: its extracted text is {size:,} bytes, over the {most:,}-byte "
            "limit (INGEST_MAX_TEXT_BYTES); split the document into smaller files or raise "
            "INGEST_MAX_TEXT_BYTES"
        )
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


def _pdf(name: str, data: bytes, limits: ParseLimits) -> tuple[str, str, dict[str, str]]:
    budget = limits.max_decompressed_bytes
    advice = (
        "a small file that inflates this much is usually a decompression bomb; split a genuine "
        "document into smaller files or raise INGEST_PARSE_MAX_DECOMPRESSED_BYTES"
    )
    # pypdf's own per-stream caps (75 MB each) let a 74 KB file inflate to 75 MB of content
    # that text extraction then chews on for most of a minute; ours bound every stream and
    # the document's total.
    caps = {
        f"{kind}_maximum_output_length": budget
        for kind in ("zlib", "lzw", "run_length", "brotli", "jbig2", "array_based_stream")
    }
    try:
        with apply_configuration(None, **caps):
            reader = PdfReader(io.BytesIO(data), strict=False)
            count = len(reader.pages)
            if count > limits.max_pages:
                raise DocumentTooLarge(
                    f"{name}: {count:,} pages, over the {limits.max_pages:,}-page limit "
                    "(INGEST_PARSE_MAX_PAGES); split the document or raise INGEST_PARSE_MAX_PAGES"
                )
            pages: list[str] = []
            inflated = 0
            for page in reader.pages:
                contents = page.get_contents()
                inflated += len(contents.get_data()) if contents is not None else 0
                if inflated > budget:
                    raise DocumentTooLarge(
                        f"{name}: its page contents decompress to more than {budget:,} bytes "
                        f"(INGEST_PARSE_MAX_DECOMPRESSED_BYTES); {advice}"
                    )
                pages.append(page.extract_text() or "")
            meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except DocumentError:
        raise
    except LimitReachedError as exc:
        raise DocumentTooLarge(
            f"{name}: the PDF is over a parsing limit of {budget:,} decompressed bytes or of "
            f"its structure ({exc}); {advice}"
        ) from exc
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentError(f"{name}: not a readable PDF ({type(exc).__name__}: {exc})") from exc
    text = "\n\n".join(pages)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return str(meta_title) or first, text, {"pages": str(len(pages))}


def expand(paths: list[Path]) -> tuple[list[tuple[Path, str]], list[str]]:
    """Files to read (each with its label) from files and folders, plus one line per bad path.

    Folders are walked recursively for supported types; a file named explicitly with an
    unsupported type is an error. A file's label names it without the server's folders: a
    path inside the folder it was found in, or the name of a file given explicitly. A
    symbolic link inside a folder that points outside it is refused, so adding a folder never
    reads (and publishes) files from elsewhere on the machine.
    """
    files: list[tuple[Path, str]] = []
    errors: list[str] = []
    for path in paths:
        if path.is_dir():
            found, refused = _walk(path)
            files += found
            errors += refused
        elif path.is_file():
            files.append((path, path.name))
        elif path.exists():
            errors.append(f"{path}: not a regular file or folder")
        else:
            errors.append(f"{path}: no such file or folder")
    return files, errors


def _walk(folder: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    root = folder.resolve()
    files: list[tuple[Path, str]] = []
    errors: list[str] = []
    for here, dirs, names in os.walk(folder):  # never follows links to folders
        for name in sorted(dirs) + sorted(names):
            path = Path(here, name)
            is_dir = name in dirs
            if not is_dir and path.suffix.lower() not in FORMATS:
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                errors.append(
                    f"{path}: a symbolic link to {path.resolve()}, outside {folder}; refused. "
                    "Copy the file into the folder, or name it explicitly, to add it"
                )
            elif not is_dir and path.is_file():
                files.append((path, path.relative_to(folder).as_posix()))
    return sorted(files), errors
