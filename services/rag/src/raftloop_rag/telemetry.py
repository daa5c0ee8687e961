"""rag's Prometheus metrics, registered on the app's own registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass(frozen=True)
class RagMetrics:
    """Counters and histograms that /metrics exposes."""

    documents: Counter
    chunks: Counter
    retrieval_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RagMetrics:
        """Register every metric on `registry`."""
        return cls(
            documents=Counter(
                "raftloop_rag_documents",
                "Document events applied, by outcome (indexed, unchanged, deleted).",
                ["outcome"],
                registry=registry,
            ),
            chunks=Counter(
                "raftloop_rag_chunks",
                "Chunks written or removed, by operation.",
                ["operation"],
                registry=registry,
            ),
            retrieval_seconds=Histogram(
                "raftloop_rag_retrieval_seconds",
                "Time to embed a question and search, by mode.",
                ["mode"],
                registry=registry,
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            ),
        )
