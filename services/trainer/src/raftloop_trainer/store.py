"""The curated dataset, runs and regression sets in SQL (SQLite; PostgreSQL by DATABASE_URL)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from raftloop_core import db
from raftloop_core.events import ExampleCurated
from raftloop_trainer.domain import (
    HOLDOUT_FRACTION,
    PendingData,
    RegressionItem,
    content_key,
    is_holdout,
    regression_set_problem,
)
from raftloop_trainer.preference import pair_refusal
from raftloop_trainer.preference_store import (
    count_pairs,
    insert_pair,
    pair_lineage,
    record_training,
    train_pair_rows,
)

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
metadata = sa.MetaData()

examples = sa.Table(
    "trainer_examples",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("example_id", sa.String(64), nullable=False, unique=True),
    sa.Column("content_key", sa.String(64), nullable=False, unique=True),
    sa.Column("tenant", sa.String(64), nullable=False, index=True),
    sa.Column("base_model", sa.String(200), nullable=False),
    sa.Column("split", sa.String(16), nullable=False),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("answer", sa.Text, nullable=False),
    sa.Column("messages", sa.Text, nullable=False),
    sa.Column("oracle_chunks", sa.Text, nullable=False),
    sa.Column("interaction_id", sa.String(64), nullable=False),
    sa.Column("review_id", sa.String(64)),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("reviewer", sa.String(200)),
    sa.Column("judge_version", sa.String(200)),
    sa.Column("adapter_id", sa.String(64)),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
)

runs = sa.Table(
    "trainer_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(64), nullable=False),
    sa.Column("base_model", sa.String(200), nullable=False),
    sa.Column("trigger", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("max_seq", sa.Integer, nullable=False),
    sa.Column("dataset_version", sa.String(64)),
    sa.Column("train_examples", sa.Integer, nullable=False, default=0),
    sa.Column("holdout_examples", sa.Integer, nullable=False, default=0),
    sa.Column("adapter_id", sa.String(64)),
    sa.Column("decision", sa.Text),
    sa.Column("report_path", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
)

regression_sets = sa.Table(
    "trainer_regression_sets",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
"""One row per tenant that has set its regression items; a replacement locks it first."""

regression_rows = sa.Table(
    "trainer_regression_items",
    metadata,
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("item_id", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("question", sa.Text, nullable=False),
    sa.Column("answer", sa.Text, nullable=False),
)

RunStatus = Literal["running", "succeeded", "failed", "promoted", "rejected"]
AddResult = Literal["added", "duplicate", "redelivered"]
LINEAGE = (
    "example_id",
    "tenant",
    "base_model",
    "question",
    "answer",
    "messages",
    "oracle_chunks",
    "interaction_id",
    "review_id",
    "source",
    "reviewer",
    "judge_version",
    "adapter_id",
)


@dataclass(frozen=True)
class Snapshot:
    """The examples of one run, split, and the highest sequence number they include.

    `pairs` are the preference pairs of the training examples (`preference_store`'s rows).
    """

    train: list[dict[str, Any]]
    holdout: list[dict[str, Any]]
    max_seq: int
    pairs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RegressionSet:
    """A tenant's regression items in their order, and when the set was last replaced."""

    items: list[RegressionItem]
    updated_at: datetime | None


class DatasetStore:
    """Curated examples with their lineage, and the history of training runs."""

    def __init__(self, url: str, holdout_fraction: float = HOLDOUT_FRACTION) -> None:
        self.engine = db.make_engine(url)
        self.holdout_fraction = holdout_fraction
        db.migrate(self.engine, MIGRATIONS)

    def add(self, event: ExampleCurated) -> AddResult:
        """Store an example once; redelivery (same id) and duplicates (same content) are skipped.

        A correction's rejected answer is stored with it as a preference pair, unless
        `preference.pair_refusal` gives a reason not to (logged; the example still counts).
        """
        key = content_key(event.tenant, event.base_model, event.question, event.answer)
        split = "holdout" if is_holdout(str(event.example_id), self.holdout_fraction) else "train"
        row = {
            "example_id": str(event.example_id),
            "content_key": key,
            "tenant": event.tenant,
            "base_model": event.base_model,
            "split": split,
            "question": event.question,
            "answer": event.answer,
            "messages": json.dumps([m.model_dump() for m in event.messages]),
            "oracle_chunks": json.dumps([c.model_dump() for c in event.oracle_chunks]),
            "interaction_id": str(event.interaction_id),
            "review_id": str(event.review_id) if event.review_id else None,
            "source": event.source,
            "reviewer": event.reviewer,
            "judge_version": event.judge_version,
            "adapter_id": event.adapter_id,
            "event_id": str(event.event_id),
            "received_at": datetime.now(UTC),
        }
        with self.engine.begin() as conn:
            seen = conn.execute(
                sa.select(examples.c.example_id).where(
                    (examples.c.example_id == row["example_id"]) | (examples.c.content_key == key)
                )
            ).first()
            if seen is not None:
                return "redelivered" if seen.example_id == row["example_id"] else "duplicate"
            try:
                conn.execute(examples.insert().values(**row))
            except IntegrityError:
                return "duplicate"  # a concurrent insert of the same example won
            self._add_pair(conn, event, split)
        return "added"

    @staticmethod
    def _add_pair(conn: sa.Connection, event: ExampleCurated, split: str) -> None:
        if event.rejected_answer is None:
            return
        refused = pair_refusal(event.source, event.answer, event.rejected_answer)
        if refused:
            log.warning(
                "preference pair refused",
                extra={
                    "example_id": str(event.example_id),
                    "interaction_id": str(event.interaction_id),
                    "tenant": event.tenant,
                    "reason": refused,
                },
            )
            return
        insert_pair(conn, event, split)

    def count_pairs(self, tenant: str, base_model: str) -> int:
        """How many preference pairs a tenant can train on for a base model."""
        with self.engine.connect() as conn:
            return count_pairs(conn, tenant, base_model)

    def pairs(self, tenant: str) -> list[dict[str, Any]]:
        """A tenant's preference pairs with their lineage and the dataset versions trained in."""
        with self.engine.connect() as conn:
            return pair_lineage(conn, tenant)

    def record_pair_training(
        self, run_id: str, dataset_version: str, example_ids: Sequence[str]
    ) -> None:
        """Record that a run's preference stage trained on the pairs of these examples."""
        with self.engine.begin() as conn:
            record_training(conn, run_id, dataset_version, example_ids)

    def count(self, tenant: str, base_model: str) -> int:
        """How many examples a tenant has for a base model."""
        with self.engine.connect() as conn:
            query = sa.select(sa.func.count()).where(
                examples.c.tenant == tenant, examples.c.base_model == base_model
            )
            return int(conn.execute(query).scalar_one())

    def _last_seq(self, conn: sa.Connection, tenant: str, base_model: str) -> int:
        query = sa.select(sa.func.max(runs.c.max_seq)).where(
            runs.c.tenant == tenant,
            runs.c.base_model == base_model,
            runs.c.status != "failed",
        )
        return int(conn.execute(query).scalar_one() or 0)

    def pending(self) -> list[PendingData]:
        """New training examples since the last (not failed) run, per tenant and base model.

        Each entry also counts every held-out example (the hold-out accumulates across runs).
        """
        out = []
        with self.engine.connect() as conn:
            groups = conn.execute(
                sa.select(examples.c.tenant, examples.c.base_model).distinct()
            ).all()
            for tenant, base_model in groups:
                after = self._last_seq(conn, tenant, base_model)
                new, oldest = conn.execute(
                    sa.select(sa.func.count(), sa.func.min(examples.c.received_at)).where(
                        examples.c.tenant == tenant,
                        examples.c.base_model == base_model,
                        examples.c.split == "train",
                        examples.c.seq > after,
                    )
                ).one()
                held = conn.execute(
                    sa.select(sa.func.count()).where(
                        examples.c.tenant == tenant,
                        examples.c.base_model == base_model,
                        examples.c.split == "holdout",
                    )
                ).scalar_one()
                oldest_at = oldest.replace(tzinfo=UTC) if oldest and not oldest.tzinfo else oldest
                trainable_pairs = count_pairs(conn, tenant, base_model)
                out.append(
                    PendingData(tenant, base_model, int(new), oldest_at, int(held), trainable_pairs)
                )
        return out

    def snapshot(self, tenant: str, base_model: str) -> Snapshot:
        """Every example of a tenant and base model, as lineage rows, split by id hash."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(examples.c.seq, examples.c.split, *[examples.c[n] for n in LINEAGE])
                .where(examples.c.tenant == tenant, examples.c.base_model == base_model)
                .order_by(examples.c.seq)
            ).all()
            pair_rows = train_pair_rows(conn, tenant, base_model)
        train: list[dict[str, Any]] = []
        holdout: list[dict[str, Any]] = []
        for row in rows:
            data = {name: getattr(row, name) for name in LINEAGE}
            data["messages"] = json.loads(data["messages"])
            data["oracle_chunks"] = json.loads(data["oracle_chunks"])
            (holdout if row.split == "holdout" else train).append(data)
        return Snapshot(train, holdout, max((r.seq for r in rows), default=0), pair_rows)

    def start_run(
        self, run_id: str, tenant: str, base_model: str, trigger: str, max_seq: int
    ) -> None:
        """Record a run as running."""
        with self.engine.begin() as conn:
            conn.execute(
                runs.insert().values(
                    run_id=run_id,
                    tenant=tenant,
                    base_model=base_model,
                    trigger=trigger,
                    status="running",
                    max_seq=max_seq,
                    started_at=datetime.now(UTC),
                )
            )

    def finish_run(self, run_id: str, status: RunStatus, **fields: Any) -> None:
        """Record a run's outcome."""
        with self.engine.begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.run_id == run_id)
                .values(status=status, finished_at=datetime.now(UTC), **fields)
            )

    def interrupt_running(self) -> int:
        """Mark runs left `running` by a killed process as failed, so triggers fire again.

        The next run over the same data has the same dataset version, so it finds the killed
        job's folder and resumes from its last checkpoint.
        """
        with self.engine.begin() as conn:
            result = conn.execute(
                runs.update()
                .where(runs.c.status == "running")
                .values(
                    status="failed",
                    error="interrupted: the trainer stopped during the run",
                    finished_at=datetime.now(UTC),
                )
            )
            return int(result.rowcount or 0)

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set fields of a run (dataset version, counts) while it runs."""
        with self.engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.run_id == run_id).values(**fields))

    def runs(self, limit: int = 20, *, tenant: str | None = None) -> list[dict[str, Any]]:
        """The latest runs, newest first: every tenant's, or only `tenant`'s."""
        query = sa.select(runs).order_by(runs.c.started_at.desc()).limit(limit)
        if tenant is not None:
            query = query.where(runs.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def run_ids(self, tenant: str) -> set[str]:
        """The ids of every run of a tenant (an adapter's card names the run that made it)."""
        with self.engine.connect() as conn:
            query = sa.select(runs.c.run_id).where(runs.c.tenant == tenant)
            return set(conn.execute(query).scalars())

    def regression_set(self, tenant: str) -> RegressionSet:
        """The tenant's regression items (none until it sets some) and when they were set."""
        with self.engine.connect() as conn:
            updated = conn.execute(
                sa.select(regression_sets.c.updated_at).where(regression_sets.c.tenant == tenant)
            ).scalar_one_or_none()
            rows = conn.execute(
                sa.select(regression_rows)
                .where(regression_rows.c.tenant == tenant)
                .order_by(regression_rows.c.position)
            ).all()
        if updated is not None and updated.tzinfo is None:
            updated = updated.replace(tzinfo=UTC)  # SQLite keeps no zone
        items = [RegressionItem(r.item_id, r.question, r.answer) for r in rows]
        return RegressionSet(items, updated)

    def regression_items(self, tenant: str) -> list[RegressionItem]:
        """The tenant's regression items in their order; empty when it has set none."""
        return self.regression_set(tenant).items

    def replace_regression(self, tenant: str, items: Sequence[RegressionItem]) -> RegressionSet:
        """Make `items` the tenant's whole regression set (empty: none), atomically.

        Raises:
            ValueError: the items break a limit of `domain.regression_set_problem`.
        """
        problem = regression_set_problem(items)
        if problem:
            raise ValueError(problem)
        # Two replacements of one tenant at once must not interleave into a mix of both sets:
        # each first writes the tenant's row, which holds the other until it commits. Two
        # first-ever replacements race on inserting that row; the loser starts over.
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    self._replace_regression(conn, tenant, items)
                break
            except IntegrityError:
                if attempt == 2:
                    raise
        return self.regression_set(tenant)

    @staticmethod
    def _replace_regression(
        conn: sa.Connection, tenant: str, items: Sequence[RegressionItem]
    ) -> None:
        now = datetime.now(UTC)
        claimed = conn.execute(
            regression_sets.update()
            .where(regression_sets.c.tenant == tenant)
            .values(updated_at=now)
        )
        if not claimed.rowcount:
            conn.execute(regression_sets.insert().values(tenant=tenant, updated_at=now))
        conn.execute(regression_rows.delete().where(regression_rows.c.tenant == tenant))
        if items:
            conn.execute(
                regression_rows.insert(),
                [
                    {
                        "tenant": tenant,
                        "item_id": item.item_id,
                        "position": position,
                        "question": item.question,
                        "answer": item.answer,
                    }
                    for position, item in enumerate(items)
                ],
            )

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
            return dict(row) if row else None
