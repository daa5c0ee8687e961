"""The demo knowledge base: Vellumbox's support handbook and its question/answer pairs.

Vellumbox is a fictional cloud-backup company written for this project. Every question names
the document and the verbatim passage (a substring of `document_text`) that answers it.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from raftloop_demo_kb.models import (
    DemoDocument,
    DemoQuestion,
    DocumentFormat,
    RegressionQuestion,
    Split,
)
from raftloop_demo_kb.text import normalize, raw_text, title_of

__all__ = [
    "FORMATS",
    "DemoDocument",
    "DemoQuestion",
    "DocumentFormat",
    "RegressionQuestion",
    "Split",
    "data_dir",
    "docs_dir",
    "document",
    "document_text",
    "documents",
    "holdout_questions",
    "questions",
    "regression_questions",
    "split",
    "train_questions",
]

FORMATS: tuple[DocumentFormat, ...] = ("md", "txt", "html", "pdf")
HOLDOUT_MODULUS = 5


def data_dir() -> Path:
    """Return the folder that holds `docs/`, `questions.jsonl` and `regression.jsonl`."""
    return Path(__file__).resolve().parent / "data"


def docs_dir() -> Path:
    """Return the folder of handbook documents (what `raftloop kb add` is pointed at)."""
    return data_dir() / "docs"


@cache
def _documents() -> tuple[DemoDocument, ...]:
    found = []
    for path in sorted(docs_dir().iterdir()):
        fmt = path.suffix.lower().lstrip(".")
        if path.is_file() and fmt in FORMATS:
            found.append(DemoDocument(path=path, name=path.name, format=fmt, title=title_of(path)))
    return tuple(found)


def documents() -> list[DemoDocument]:
    """Return every handbook document, sorted by file name."""
    return list(_documents())


def document(name: str) -> DemoDocument:
    """Return the document with this file name.

    Raises:
        KeyError: If no shipped document has that name.
    """
    for doc in _documents():
        if doc.name == name:
            return doc
    raise KeyError(f"no demo document named {name!r}; see raftloop_demo_kb.documents()")


@cache
def document_text(name: str) -> str:
    """Return a document's visible text with whitespace collapsed; passages are substrings."""
    return normalize(raw_text(document(name).path))


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@cache
def _questions() -> tuple[DemoQuestion, ...]:
    return tuple(DemoQuestion(**row) for row in _read_jsonl(data_dir() / "questions.jsonl"))


def questions() -> list[DemoQuestion]:
    """Return every question/answer pair, in file order."""
    return list(_questions())


def split(question: DemoQuestion | str) -> Split:
    """Assign a question (or its id) to a split by a fixed rule on sha256 of the id.

    A question is held out when int(sha256(id), 16) % 5 == 0 (about 20%); otherwise it is
    in the training split. The rule never changes, so the split is stable across runs.
    """
    qid = question if isinstance(question, str) else question.id
    digest = hashlib.sha256(qid.encode("utf-8")).hexdigest()
    return "holdout" if int(digest, 16) % HOLDOUT_MODULUS == 0 else "train"


def train_questions() -> list[DemoQuestion]:
    """Return the questions in the training split."""
    return [q for q in _questions() if split(q) == "train"]


def holdout_questions() -> list[DemoQuestion]:
    """Return the held-out questions (never used for training; used to evaluate)."""
    return [q for q in _questions() if split(q) == "holdout"]


@cache
def _regression() -> tuple[RegressionQuestion, ...]:
    rows = _read_jsonl(data_dir() / "regression.jsonl")
    return tuple(RegressionQuestion(**row) for row in rows)


def regression_questions() -> list[RegressionQuestion]:
    """Return general questions with short reference answers, used as a forgetting check."""
    return list(_regression())
