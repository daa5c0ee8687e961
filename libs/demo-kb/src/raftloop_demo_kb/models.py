"""Typed records of the demo knowledge base."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

DocumentFormat = Literal["md", "txt", "html", "pdf"]
Split = Literal["train", "holdout"]


class DemoDocument(BaseModel):
    """One handbook document shipped with the package."""

    model_config = ConfigDict(frozen=True)

    path: Path
    name: str
    format: DocumentFormat
    title: str


class DemoQuestion(BaseModel):
    """A question answered by one verbatim passage of one document."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    question: str
    answer: str
    document: str
    passage: str


class RegressionQuestion(BaseModel):
    """A general question, not about the company, used as a forgetting check."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    question: str
    answer: str
