"""Preference pairs in SQL, beside the examples they belong to (used by `store.DatasetStore`).

A pair is keyed by its example: it is written in the same transaction as the example, has the
example's tenant, base model and split (a held-out example's pair is never trained on), and
keeps its lineage: interaction, review, and every run and dataset version that trained on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from raftloop_core.events import ExampleCurated

pair_metadata = sa.MetaData()

pairs = sa.Table(
    "trainer_pairs",
    pair_metadata,
    sa.Column("example_id", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("base_model", sa.String(200), nullable=False),
    sa.Column("split", sa.String(16), nullable=False),
    sa.Column("interaction_id", sa.String(64), nullable=False),
    sa.Column("review_id", sa.String(64)),
    sa.Column("rejected_answer", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)
"""One row per corrected example: the chosen side is the example's answer."""

pair_runs = sa.Table(
    "trainer_pair_runs",
    pair_metadata,
    sa.Column("example_id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("dataset_version", sa.String(64), nullable=False),
    sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
)
"""Which runs (and dataset versions) trained a preference stage on which pairs."""


def insert_pair(conn: sa.Connection, event: ExampleCurated, split: str) -> None:
    """Store the pair of a newly added example (the caller checked `pair_refusal`)."""
    assert event.rejected_answer is not None
    conn.execute(
        pairs.insert().values(
            example_id=str(event.example_id),
            tenant=event.tenant,
            base_model=event.base_model,
            split=split,
            interaction_id=str(event.interaction_id),
            review_id=str(event.review_id) if event.review_id else None,
            rejected_answer=event.rejected_answer,
            received_at=datetime.now(UTC),
        )
    )


def count_pairs(conn: sa.Connection, tenant: str, base_model: str) -> int:
    """How many pairs a tenant can train on for a base model (held-out ones not counted)."""
    query = sa.select(sa.func.count()).where(
        pairs.c.tenant == tenant, pairs.c.base_model == base_model, pairs.c.split == "train"
    )
    return int(conn.execute(query).scalar_one())


def train_pair_rows(conn: sa.Connection, tenant: str, base_model: str) -> list[dict[str, Any]]:
    """The tenant's trainable pairs, oldest first (ids of example, interaction and review)."""
    query = (
        sa.select(
            pairs.c.example_id, pairs.c.interaction_id, pairs.c.review_id, pairs.c.rejected_answer
        )
        .where(pairs.c.tenant == tenant, pairs.c.base_model == base_model, pairs.c.split == "train")
        .order_by(pairs.c.received_at, pairs.c.example_id)
    )
    return [dict(r) for r in conn.execute(query).mappings()]


def record_training(
    conn: sa.Connection, run_id: str, dataset_version: str, example_ids: Sequence[str]
) -> None:
    """Record that `run_id` (on `dataset_version`) trained its preference stage on these pairs."""
    if not example_ids:
        return
    now = datetime.now(UTC)
    conn.execute(
        pair_runs.insert(),
        [
            {
                "example_id": example_id,
                "run_id": run_id,
                "dataset_version": dataset_version,
                "trained_at": now,
            }
            for example_id in example_ids
        ],
    )


def pair_lineage(conn: sa.Connection, tenant: str) -> list[dict[str, Any]]:
    """Every pair of a tenant with its lineage and the dataset versions that trained on it."""
    rows = conn.execute(
        sa.select(pairs).where(pairs.c.tenant == tenant).order_by(pairs.c.received_at)
    ).mappings()
    out = [dict(r) for r in rows]
    ids = [r["example_id"] for r in out]
    trained: dict[str, list[dict[str, str]]] = {i: [] for i in ids}
    if ids:
        runs = conn.execute(
            sa.select(pair_runs)
            .where(pair_runs.c.example_id.in_(ids))
            .order_by(pair_runs.c.trained_at, pair_runs.c.run_id)
        ).mappings()
        for run in runs:
            trained[run["example_id"]].append(
                {"run_id": run["run_id"], "dataset_version": run["dataset_version"]}
            )
    return [r | {"trained_in": trained[r["example_id"]]} for r in out]
