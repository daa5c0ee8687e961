"""Preference pairs from reviewers' corrections: pure rules and construction, no I/O.

A reviewer who corrects an answer says which of two answers to the same prompt is better: the
correction (chosen) over what the model said (rejected). The prompt is the RAFT prompt of the
example's SFT training example (the same messages and documents), and both sides are written in
the RAFT target format with the same quote of the oracle, so a pair differs only in the final
answer the reviewer replaced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from raftloop_core.prompting import final_answer
from raftloop_trainer.raft import Message, RaftExample, RaftSource, reasoning_target

Recipe = Literal["sft", "sft+dpo", "dpo"]
RECIPES: tuple[Recipe, ...] = ("sft", "sft+dpo", "dpo")


def pair_refusal(source: str, answer: str, rejected: str | None) -> str | None:
    """Why an example with `rejected` (the model's replaced answer) gives no pair, or None.

    Args:
        source: the example's source (`approved`, `corrected`, `auto_accepted`).
        answer: the curated answer, the chosen side.
        rejected: the model's original answer, set by hitl for corrections only.
    """
    if rejected is None:
        return "no rejected answer: only a correction gives a preference pair"
    if source != "corrected":
        return (
            f"a rejected answer on a {source!r} example: only a correction replaces the model's "
            "answer, so this pair is not trusted"
        )
    # Both sides are trained as their final answers (a served RAFT answer's quote is rebuilt),
    # so they are compared as such, whitespace, quote markers and `Answer:` aside.
    if final_answer(answer) == final_answer(rejected):
        return (
            "the corrected answer equals the model's answer (whitespace aside): a pair of two "
            "equal answers teaches no preference"
        )
    return None


@dataclass(frozen=True)
class PreferencePair:
    """One DPO pair with its lineage: the prompt messages, the chosen and rejected targets."""

    example_id: str
    interaction_id: str
    review_id: str | None
    prompt: tuple[Message, ...]
    chosen: str
    rejected: str


def build_pairs(
    examples: Iterable[RaftExample],
    sources: Sequence[RaftSource],
    rejected: Mapping[str, Mapping[str, str | None]],
) -> list[PreferencePair]:
    """Pairs of the built SFT examples that have a stored rejected answer.

    Args:
        examples: the run's RAFT training examples (their prompt is the pair's prompt).
        sources: what they were built from (the oracle the targets quote).
        rejected: per example id, the pair row: `rejected_answer`, `interaction_id`,
            `review_id`.
    """
    by_id = {s.example_id: s for s in sources}
    pairs = []
    for example in examples:
        row = rejected.get(example.example_id)
        source = by_id.get(example.example_id)
        if row is None or source is None or row.get("rejected_answer") is None:
            continue
        rejected_target = reasoning_target(
            source.oracle,
            final_answer(str(row["rejected_answer"])),
            oracle_kept=example.oracle_kept,
        )
        pairs.append(
            PreferencePair(
                example_id=example.example_id,
                interaction_id=str(row["interaction_id"]),
                review_id=row.get("review_id"),
                prompt=tuple(example.prompt),
                chosen=example.target,
                rejected=rejected_target,
            )
        )
    return pairs


def write_pairs(path: Path, pairs: Sequence[PreferencePair]) -> Path:
    """Write pairs as JSONL (every field of `PreferencePair`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(p)) + "\n" for p in pairs))
    return path


def load_pairs(path: Path) -> list[PreferencePair]:
    """The pairs of a JSONL file written by `write_pairs`."""
    pairs = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            row["prompt"] = tuple(row["prompt"])
            pairs.append(PreferencePair(**row))
    return pairs
