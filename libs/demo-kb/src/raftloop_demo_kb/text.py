"""Visible plain text of the handbook documents, with maintained parsers."""

from __future__ import annotations

from pathlib import Path

from bs4 import BeautifulSoup
from pypdf import PdfReader


def normalize(text: str) -> str:
    """Collapse every run of whitespace (line wraps included) into one space."""
    return " ".join(text.split())


def raw_text(path: Path) -> str:
    """Extract the text a reader sees, without normalising whitespace.

    Args:
        path: A .md, .txt, .html or .pdf file.

    Returns:
        The raw file for md/txt, the visible text for html (scripts and styles dropped) and
        the text layer of every page for pdf.

    Raises:
        ValueError: If the suffix is none of the four supported formats.
    """
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("md", "txt"):
        return path.read_text(encoding="utf-8")
    if suffix == "html":
        soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
        for tag in soup(["script", "style", "head"]):
            tag.decompose()
        return soup.get_text(separator="\n")
    if suffix == "pdf":
        reader = PdfReader(path)
        return "\n".join(page.extract_text() or "" for page in reader.pages)
    raise ValueError(f"unsupported document format {path.suffix!r}: use md, txt, html or pdf")


def title_of(path: Path) -> str:
    """Return the document's title: first heading (md/html), first line (txt), metadata (pdf)."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "pdf":
        meta = PdfReader(path).metadata
        if meta is not None and meta.title:
            return str(meta.title)
    elif suffix == "html":
        soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
        heading = soup.find("h1") or soup.find("title")
        if heading is not None:
            return normalize(heading.get_text())
    else:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                return line.lstrip("#").strip()
    return path.stem.replace("-", " ").capitalize()
