"""RAFT example construction: pure code, no I/O (Zhang et al., 2024, "RAFT").

Each curated example becomes a chat: a system turn, earlier turns of the conversation, and a user
turn holding shuffled documents (the oracle chunk, kept with probability `p_oracle`, plus
distractors that never include the oracle) and the question. The assistant target is a short
reasoning that quotes the oracle verbatim between `##begin_quote##` and `##end_quote##` (when the
oracle is present) followed by `Answer: <final answer>`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from raftloop_core import prompting
from raftloop_core.prompting import (
    ANSWER_MARKER,
    BEGIN_QUOTE,
    END_QUOTE,
    INSTRUCTION,
    PROMPT_FORMAT,
    SYSTEM_PROMPT,
    final_answer,
)

NO_QUOTE_REASONING = "No document states this directly; answering from what I know."
# Line breaks end a sentence too: rag's chunks open with their heading path on its own lines,
# and a quote must not run a heading into the sentence under it.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"\w+")

Message = dict[str, str]


@dataclass(frozen=True)
class Chunk:
    """A piece of a knowledge document."""

    chunk_id: str
    text: str
    document_id: str = ""
    title: str | None = None


@dataclass(frozen=True)
class RaftSource:
    """What a RAFT example is built from: one curated question with its answer and oracle."""

    example_id: str
    question: str
    answer: str
    oracle: tuple[Chunk, ...]
    history: tuple[Message, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class RaftExample:
    """A built example: the chat messages (the last one is the assistant target).

    `documents` are the texts of the chunks the prompt shows, in its order, and `oracle` the
    texts of the oracle chunks among them (empty when dropped or never retrieved): the error
    analysis checks quotes and numbers against them.
    """

    example_id: str
    messages: tuple[Message, ...]
    oracle_kept: bool
    document_ids: tuple[str, ...]
    documents: tuple[str, ...] = ()
    oracle: tuple[str, ...] = ()

    @property
    def prompt(self) -> list[Message]:
        """The messages the model sees."""
        return list(self.messages[:-1])

    @property
    def target(self) -> str:
        """The assistant answer the model learns."""
        return self.messages[-1]["content"]


def words(text: str) -> list[str]:
    """Lower-cased word tokens."""
    return _WORD.findall(text.lower())


def best_quote(oracle_text: str, answer: str) -> str:
    """The sentence of `oracle_text` that overlaps `answer` most, as a verbatim substring."""
    sentences = [s.strip() for s in _SENTENCE_END.split(oracle_text) if s.strip()]
    if not sentences:
        return oracle_text.strip()
    wanted = set(words(answer))
    # Ties go to the earliest sentence so the choice is deterministic.
    return max(sentences, key=lambda s: (len(wanted & set(words(s))), -sentences.index(s)))


def reasoning_target(oracle: Sequence[Chunk], answer: str, *, oracle_kept: bool) -> str:
    """The assistant target: a quote of the oracle (when shown) then the final answer."""
    if oracle_kept and oracle:
        quote = best_quote(" ".join(c.text for c in oracle), answer)
        reasoning = f"The documents say: {BEGIN_QUOTE}{quote}{END_QUOTE}"
    else:
        reasoning = NO_QUOTE_REASONING
    return f"{reasoning}\n{ANSWER_MARKER} {answer.strip()}"


def clean_distractors(oracle: Sequence[Chunk], candidates: Sequence[Chunk], k: int) -> list[Chunk]:
    """Up to `k` candidates that are neither an oracle chunk nor a copy of one."""
    oracle_ids = {c.chunk_id for c in oracle}
    oracle_texts = {_norm(c.text) for c in oracle}
    seen: set[str] = set()
    kept: list[Chunk] = []
    for chunk in candidates:
        text = _norm(chunk.text)
        if chunk.chunk_id in oracle_ids or text in seen or _overlaps(text, oracle_texts):
            continue
        seen.add(text)
        kept.append(chunk)
        if len(kept) == k:
            break
    return kept


def _norm(text: str) -> str:
    return " ".join(words(text))


def _overlaps(text: str, oracle_texts: set[str]) -> bool:
    return any(o and (o in text or text in o) for o in oracle_texts)


def render_documents(chunks: Sequence[Chunk]) -> str:
    """Numbered documents as the user turn shows them (the shared RAFT format)."""
    return prompting.render_documents([prompting.Document(c.text, c.title) for c in chunks])


def raft_prompt(question: str, documents: Sequence[Chunk]) -> str:
    """The user turn: instruction, documents, question (the shared RAFT format)."""
    return prompting.raft_prompt(question, [prompting.Document(c.text, c.title) for c in documents])


def build_example(
    source: RaftSource,
    distractors: Sequence[Chunk],
    *,
    rng: random.Random,
    p_oracle: float = 0.8,
) -> RaftExample:
    """Build one RAFT example; `distractors` must already exclude the oracle."""
    oracle_kept = bool(source.oracle) and rng.random() < p_oracle
    documents = [*(source.oracle if oracle_kept else ()), *distractors]
    rng.shuffle(documents)
    messages: list[Message] = [{"role": "system", "content": SYSTEM_PROMPT}]
    messages += [m for m in source.history if m["role"] in ("user", "assistant")]
    messages.append({"role": "user", "content": raft_prompt(source.question, documents)})
    target = reasoning_target(source.oracle, source.answer, oracle_kept=oracle_kept)
    messages.append({"role": "assistant", "content": target})
    return RaftExample(
        example_id=source.example_id,
        messages=tuple(messages),
        oracle_kept=oracle_kept,
        document_ids=tuple(c.chunk_id for c in documents),
        documents=tuple(c.text for c in documents),
        oracle=tuple(c.text for c in source.oracle) if oracle_kept else (),
    )


def example_rng(seed: int, example_id: str) -> random.Random:
    """A generator seeded by the run seed and the example, so builds are reproducible."""
    return random.Random(f"{seed}:{example_id}")


__all__ = [
    "ANSWER_MARKER",
    "BEGIN_QUOTE",
    "END_QUOTE",
    "INSTRUCTION",
    "PROMPT_FORMAT",
    "SYSTEM_PROMPT",
    "Chunk",
    "RaftExample",
    "RaftSource",
    "best_quote",
    "build_example",
    "clean_distractors",
    "example_rng",
    "final_answer",
    "raft_prompt",
    "reasoning_target",
    "render_documents",
    "words",
]
