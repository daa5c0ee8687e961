"""Rubrics: one file per criterion (YAML, TOML or JSON), bundled or from a configured folder."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

BUNDLED = Path(__file__).parent / "rubrics"
SUFFIXES = (".yaml", ".yml", ".toml", ".json")


class RubricError(ValueError):
    """A rubric file is missing or wrong; the message names the file and the fix."""


class Rubric(BaseModel):
    """One criterion: what it means and what each score from 1 to 5 looks like."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")
    description: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0)
    needs_context: bool = False
    anchors: dict[int, str]

    @field_validator("anchors")
    @classmethod
    def _five_anchors(cls, value: dict[int, str]) -> dict[int, str]:
        if sorted(value) != [1, 2, 3, 4, 5]:
            raise ValueError("anchors must describe exactly the scores 1, 2, 3, 4 and 5")
        return value


def _read(path: Path) -> object:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix == ".json":
        return json.loads(text)
    return yaml.safe_load(text)


def load_rubrics(folder: Path | None = None, only: list[str] | None = None) -> list[Rubric]:
    """Load every rubric file of `folder` (default: the bundled ones), sorted by name.

    Raises:
        RubricError: the folder has no rubrics, a file is invalid, or `only` names an unknown one.
    """
    root = folder or BUNDLED
    files = sorted(p for p in root.glob("*") if p.suffix in SUFFIXES) if root.is_dir() else []
    if not files:
        raise RubricError(
            f"no rubric files (*.yaml, *.toml, *.json) in {root}; set JUDGE_RUBRICS_DIR"
        )
    rubrics: dict[str, Rubric] = {}
    for path in files:
        try:
            rubric = Rubric.model_validate(_read(path))
        except (ValidationError, ValueError, yaml.YAMLError) as exc:
            raise RubricError(f"rubric {path} is invalid: {exc}") from exc
        if rubric.name in rubrics:
            raise RubricError(f"rubric {rubric.name!r} is defined twice (in {path})")
        rubrics[rubric.name] = rubric
    if only:
        unknown = sorted(set(only) - set(rubrics))
        if unknown:
            raise RubricError(
                f"unknown criteria {unknown} in JUDGE_CRITERIA; known: {sorted(rubrics)}"
            )
        return [rubrics[name] for name in sorted(only)]
    return [rubrics[name] for name in sorted(rubrics)]


def rubrics_digest(rubrics: list[Rubric]) -> str:
    """A short hash of the rubric contents: part of the judge version."""
    blob = json.dumps([r.model_dump() for r in rubrics], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]
