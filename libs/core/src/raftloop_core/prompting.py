"""The RAFT prompt format: what the trainer teaches adapters and what the gateway shows them.

An adapter trained on one prompt layout and served with another loses most of what it learned,
so both sides build the documents turn here: a system turn, the instruction, numbered
documents, `Question: ...`. The answer quotes the supporting sentence between
`##begin_quote##` and `##end_quote##`, then gives `Answer: <final answer>`. Pure code, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PROMPT_FORMAT = "raft-v1"
BEGIN_QUOTE = "##begin_quote##"
END_QUOTE = "##end_quote##"
ANSWER_MARKER = "Answer:"
SYSTEM_PROMPT = "You are a support assistant. Answer briefly and only from the documents."
INSTRUCTION = (
    "Answer the question using the documents. Quote the sentence that supports the answer "
    f"between {BEGIN_QUOTE} and {END_QUOTE}, then give the final answer after "
    f'"{ANSWER_MARKER}".'
)


@dataclass(frozen=True)
class Document:
    """A document as the prompt shows it."""

    text: str
    title: str | None = None


def render_documents(documents: Sequence[Document]) -> str:
    """Numbered documents as the user turn shows them."""
    parts = []
    for i, doc in enumerate(documents, start=1):
        title = f" ({doc.title})" if doc.title else ""
        parts.append(f"Document {i}{title}:\n{doc.text.strip()}")
    return "\n\n".join(parts)


def raft_prompt(question: str, documents: Sequence[Document]) -> str:
    """The user turn: instruction, documents, question."""
    return f"{INSTRUCTION}\n\n{render_documents(documents)}\n\nQuestion: {question.strip()}"


def final_answer(generated: str) -> str:
    """The final answer in a generation: the text after the last `Answer:`, else all of it."""
    text = generated
    if ANSWER_MARKER in text:
        text = text.rsplit(ANSWER_MARKER, 1)[1]
    text = text.replace(BEGIN_QUOTE, " ").replace(END_QUOTE, " ")
    return " ".join(text.split())
