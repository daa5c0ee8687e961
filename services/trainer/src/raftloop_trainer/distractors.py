"""Distractor sources: the rag service over HTTP, or chunks of local documents by word overlap."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import httpx

from raftloop_trainer.raft import Chunk, words

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STOP = (
    "a an the is are was were be to of in on for and or with do does did how what when where "
    "which who why can i my you your it its this that at by from as if not"
)
STOPWORDS = frozenset(_STOP.split(" "))


class RagUnavailable(RuntimeError):
    """The rag service did not answer; the message says where it was looked for."""


@dataclass
class HttpDistractorSource:
    """Hard negatives from the rag service: `POST {rag_url}/v1/retrieve`."""

    client: httpx.Client
    rag_url: str
    api_key: str

    def distractors(
        self, question: str, *, k: int, exclude_ids: Sequence[str], tenant: str
    ) -> list[Chunk]:
        """Chunks rag retrieves for the question, the excluded ids left out.

        Raises:
            RagUnavailable: rag could not be reached or answered with an error.
        """
        body = {"query": question, "k": k, "tenant": tenant, "exclude_ids": list(exclude_ids)}
        try:
            response = self.client.post(
                f"{self.rag_url.rstrip('/')}/v1/retrieve",
                json=body,
                headers={"Authorization": f"Bearer {self.api_key}"},
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise RagUnavailable(
                f"rag retrieval at {self.rag_url} failed ({exc}); start rag or set TRAINER_RAG_URL"
            ) from exc
        return [
            Chunk(
                chunk_id=str(c["chunk_id"]),
                text=str(c["text"]),
                document_id=str(c.get("document_id", "")),
                title=c.get("title"),
            )
            for c in response.json().get("chunks", [])
        ]


def chunk_text(document_id: str, text: str, *, title: str | None, max_words: int) -> list[Chunk]:
    """Split text into sentence-aligned chunks of at most about `max_words` words."""
    chunks: list[Chunk] = []
    current: list[str] = []
    for sentence in (s.strip() for s in _SENTENCE_END.split(text)):
        if not sentence:
            continue
        if current and len(" ".join([*current, sentence]).split()) > max_words:
            chunks.append(_chunk(document_id, len(chunks), current, title))
            current = []
        current.append(sentence)
    if current:
        chunks.append(_chunk(document_id, len(chunks), current, title))
    return chunks


def _chunk(document_id: str, index: int, sentences: list[str], title: str | None) -> Chunk:
    return Chunk(f"{document_id}#{index}", " ".join(sentences), document_id, title)


def content_words(text: str) -> set[str]:
    """Words of `text` without stop words."""
    return {w for w in words(text) if w not in STOPWORDS}


class LocalDistractorSource:
    """Nearest chunks of local documents by word overlap with the question.

    Used when rag is not configured (and in tests): the same documents rag would index,
    ranked by a simpler score.
    """

    def __init__(self, chunks: Iterable[Chunk]) -> None:
        self.chunks = list(chunks)
        self._words = [content_words(c.text) for c in self.chunks]

    def distractors(
        self,
        question: str,
        *,
        k: int,
        exclude_ids: Sequence[str],
        tenant: str = "default",  # noqa: ARG002  # the DistractorSource port's; one corpus here
    ) -> list[Chunk]:
        """The `k` chunks sharing most content words with the question, excluded ids left out."""
        wanted = content_words(question)
        excluded = set(exclude_ids)
        ranked = sorted(
            (i for i, c in enumerate(self.chunks) if c.chunk_id not in excluded),
            key=lambda i: (-len(wanted & self._words[i]), self.chunks[i].chunk_id),
        )
        return [self.chunks[i] for i in ranked[:k]]

    def containing(self, passage: str) -> Chunk | None:
        """The chunk whose text contains `passage`, if any."""
        return next((c for c in self.chunks if passage in c.text), None)

    @classmethod
    def from_demo_kb(cls, *, max_words: int = 45) -> LocalDistractorSource:
        """Chunks of the demo knowledge base's documents."""
        import raftloop_demo_kb as kb

        chunks: list[Chunk] = []
        for doc in kb.documents():
            text = kb.document_text(doc.name)
            chunks += chunk_text(doc.name, text, title=doc.title, max_words=max_words)
        return cls(chunks)
