"""Turn curated examples into RAFT training and evaluation sets, fetching distractors."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from raftloop_core.prompting import ANSWER_MARKER, BEGIN_QUOTE, final_answer
from raftloop_trainer.domain import RegressionItem
from raftloop_trainer.evaluate import EvalItem, regression_items
from raftloop_trainer.metrics import normalize_answer
from raftloop_trainer.raft import (
    Chunk,
    RaftExample,
    RaftSource,
    build_example,
    clean_distractors,
    example_rng,
)


class DistractorSource(Protocol):
    """Where hard negatives for a question come from (rag, or local documents)."""

    def distractors(
        self, question: str, *, k: int, exclude_ids: Sequence[str], tenant: str
    ) -> list[Chunk]:
        """Chunks relevant-looking for `question`, none of `exclude_ids`."""
        ...


def build_set(
    sources: Iterable[RaftSource],
    distractor_source: DistractorSource,
    *,
    k: int,
    p_oracle: float,
    seed: int,
    tenant: str = "default",
) -> list[RaftExample]:
    """RAFT examples for every source: `k` distractors each, about `p_oracle` with the oracle.

    Examples whose reviewer found no oracle among the retrieved chunks already teach answering
    without one; they count toward the `1 - p_oracle` share, and only the rest of that share is
    dropped from examples that have an oracle. Dropping `1 - p_oracle` of those on top taught
    the adapter to open most answers with "No document states this directly" although the
    passage was shown.
    """
    sources = list(sources)
    keep = oracle_keep_probability(sum(1 for s in sources if s.oracle), len(sources), p_oracle)
    built = []
    for source in sources:
        exclude = [c.chunk_id for c in source.oracle]
        # Ask for spares: rag may return near-copies of the oracle, which are dropped.
        candidates = distractor_source.distractors(
            source.question, k=k + 3, exclude_ids=exclude, tenant=tenant
        )
        distractors = clean_distractors(source.oracle, candidates, k)
        rng = example_rng(seed, source.example_id)
        built.append(build_example(source, distractors, rng=rng, p_oracle=keep))
    return built


MIN_RECOVERY_TOKENS = 3
"""Answers shorter than this (after normalisation) are too generic to find their passage by."""


def answer_recall(answer: str, text: str) -> float:
    """The share of the answer's normalised tokens that `text` holds (each as often)."""
    wanted = Counter(normalize_answer(answer).split())
    if not wanted:
        return 0.0
    have = Counter(normalize_answer(text).split())
    return sum(min(n, have[t]) for t, n in wanted.items()) / sum(wanted.values())


def recover_oracles(
    sources: Sequence[RaftSource],
    search: DistractorSource,
    *,
    tenant: str,
    min_recall: float,
    k: int = 3,
) -> tuple[list[RaftSource], int]:
    """Sources whose retrieval missed the answer, with the passage that holds it where one does.

    The reviewer found no retrieved chunk that answers, yet the knowledge base may hold one that
    the question's search ranked too low. It is searched by the reviewer's answer instead, and
    the first of `k` chunks that holds `min_recall` of the answer's tokens becomes the oracle, as
    RAFT builds contexts with the oracle. Answers of fewer than `MIN_RECOVERY_TOKENS` tokens
    ("Yes.") are left alone: too many passages hold them. Returns the sources and how many
    oracles were recovered; the rest stay without one (no document answers them).
    """
    out: list[RaftSource] = []
    recovered = 0
    for source in sources:
        if source.oracle or len(normalize_answer(source.answer).split()) < MIN_RECOVERY_TOKENS:
            out.append(source)
            continue
        found = search.distractors(source.answer, k=k, exclude_ids=[], tenant=tenant)
        match = next((c for c in found if answer_recall(source.answer, c.text) >= min_recall), None)
        if match is None:
            out.append(source)
            continue
        out.append(dataclasses.replace(source, oracle=(match,)))
        recovered += 1
    return out, recovered


def oracle_keep_probability(with_oracle: int, total: int, p_oracle: float) -> float:
    """The chance to keep an oracle so that about `p_oracle` of all examples show one."""
    if with_oracle == 0:
        return p_oracle
    return min(1.0, p_oracle * total / with_oracle)


def write_examples(path: Path, examples: Sequence[RaftExample]) -> Path:
    """Write RAFT examples as JSONL ({'example_id', 'messages', 'oracle_kept'})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {"example_id": e.example_id, "messages": list(e.messages), "oracle_kept": e.oracle_kept}
        )
        for e in examples
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def sources_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[RaftSource]:
    """RAFT sources from dataset rows (the store's lineage rows or a snapshot's lines)."""
    sources = []
    for row in rows:
        oracle = tuple(
            Chunk(
                chunk_id=str(c["chunk_id"]),
                text=str(c["text"]),
                document_id=str(c.get("document_id") or ""),
                title=c.get("title"),
            )
            for c in row["oracle_chunks"]
        )
        turns = [m for m in row["messages"] if m["role"] in ("user", "assistant")]
        if turns and turns[-1]["role"] == "user":
            turns = turns[:-1]  # the question itself goes into the RAFT prompt
        history = tuple({"role": m["role"], "content": m["content"]} for m in turns)
        sources.append(
            RaftSource(
                str(row["example_id"]),
                row["question"],
                served_answer(row["answer"]),
                oracle,
                history,
            )
        )
    return sources


def served_answer(answer: str) -> str:
    """The final answer of an approved served answer that is already in the RAFT format.

    A reviewer approving what the adapter said approves its `Answer:`; the builder adds the
    quote again, so keeping the served quote would nest one inside the other.
    """
    if ANSWER_MARKER in answer or BEGIN_QUOTE in answer:
        return final_answer(answer)
    return answer


def regression_set(items: Sequence[RegressionItem], limit: int) -> list[EvalItem]:
    """The forgetting check of a run: the first `limit` of the tenant's own regression items."""
    return regression_items([(i.item_id, i.question, i.answer) for i in items[:limit]])
