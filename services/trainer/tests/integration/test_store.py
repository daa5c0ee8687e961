"""The dataset store on SQLite and PostgreSQL: lineage, dedupe, redelivery, pending, snapshots,
and each tenant's regression set."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from raftloop_core.events import ChatMessage, ExampleCurated, RetrievedChunk
from raftloop_trainer.domain import RegressionItem, dataset_version, is_holdout
from raftloop_trainer.store import DatasetStore, RegressionSet, metadata

pytestmark = pytest.mark.integration


@pytest.fixture
def store(sql_url: str) -> DatasetStore:
    """An empty store on SQLite, then on a PostgreSQL schema of its own (`sql_url`)."""
    return DatasetStore(sql_url)


def curated(question: str, answer: str, *, tenant: str = "acme") -> ExampleCurated:
    chunk = RetrievedChunk(chunk_id="doc#0", document_id="doc", text=f"{answer} Really.", score=0.9)
    return ExampleCurated(
        tenant=tenant,
        example_id=uuid.uuid4(),
        interaction_id=uuid.uuid4(),
        review_id=uuid.uuid4(),
        source="corrected",
        messages=[ChatMessage(role="user", content=question)],
        question=question,
        answer=answer,
        oracle_chunks=[chunk],
        reviewer="rita",
        judge_version="rubric-v1",
        base_model="tiny",
    )


def test_examples_are_stored_once_with_their_lineage(store: DatasetStore) -> None:
    event = curated("How long do refunds take?", "Five days.")
    assert store.add(event) == "added"
    assert store.add(event) == "redelivered"
    assert store.add(curated("how long do refunds take", "five days")) == "duplicate"
    assert store.add(curated("How long do refunds take?", "Five days.", tenant="other")) == "added"
    assert store.count("acme", "tiny") == 1
    snap = store.snapshot("acme", "tiny")
    [row] = snap.train + snap.holdout
    assert row["interaction_id"] == str(event.interaction_id)
    assert row["review_id"] == str(event.review_id)
    assert row["reviewer"] == "rita"
    assert row["judge_version"] == "rubric-v1"
    assert row["oracle_chunks"][0]["chunk_id"] == "doc#0"
    assert row["tenant"] == "acme"
    assert row["base_model"] == "tiny"


def test_split_pending_and_run_watermark(store: DatasetStore) -> None:
    events = [curated(f"Question {i}?", f"Answer {i}.") for i in range(30)]
    for event in events:
        store.add(event)
    snap = store.snapshot("acme", "tiny")
    assert {r["example_id"] for r in snap.holdout} == {
        str(e.example_id) for e in events if is_holdout(str(e.example_id))
    }
    assert len(snap.train) + len(snap.holdout) == 30
    [pending] = store.pending()
    assert pending.new_examples == len(snap.train)
    assert pending.holdout_examples == len(snap.holdout)
    assert pending.oldest_new_at is not None

    store.start_run("run-1", "acme", "tiny", "test", snap.max_seq)
    store.finish_run("run-1", "rejected", dataset_version=dataset_version(snap.train))
    assert store.pending()[0].new_examples == 0
    store.add(curated("A brand new question?", "New."))
    new = store.pending()[0].new_examples
    assert new in (0, 1)  # 0 when the new example hashed into the hold-out split
    assert store.run("run-1")["status"] == "rejected"  # type: ignore[index]
    assert [r["run_id"] for r in store.runs()] == ["run-1"]


def test_the_holdout_accumulates_across_runs_at_the_configured_fraction(tmp_path: Path) -> None:
    store = DatasetStore(f"sqlite:///{tmp_path / 'quarter.sqlite3'}", holdout_fraction=0.25)
    first = [curated(f"First {i}?", f"One {i}.") for i in range(40)]
    for event in first:
        store.add(event)
    held = sum(is_holdout(str(e.example_id), 0.25) for e in first)
    assert store.pending()[0].holdout_examples == held
    snap = store.snapshot("acme", "tiny")
    store.start_run("run-q", "acme", "tiny", "test", snap.max_seq)
    store.finish_run("run-q", "rejected", dataset_version=dataset_version(snap.train))
    second = [curated(f"Second {i}?", f"Two {i}.") for i in range(40)]
    for event in second:
        store.add(event)
    held += sum(is_holdout(str(e.example_id), 0.25) for e in second)
    [pending] = store.pending()
    assert pending.holdout_examples == held  # the first run's hold-out still counts
    assert pending.new_examples == 40 - sum(is_holdout(str(e.example_id), 0.25) for e in second)


def test_failed_runs_do_not_consume_examples(store: DatasetStore) -> None:
    for i in range(10):
        store.add(curated(f"Q{i}?", f"A{i}."))
    before = store.pending()[0].new_examples
    store.start_run("run-f", "acme", "tiny", "test", store.snapshot("acme", "tiny").max_seq)
    store.finish_run("run-f", "failed", error="boom")
    assert store.pending()[0].new_examples == before


def test_runs_left_running_by_a_crash_are_marked_failed(store: DatasetStore) -> None:
    for i in range(10):
        store.add(curated(f"Q{i}?", f"A{i}."))
    before = store.pending()[0].new_examples
    store.start_run("run-k", "acme", "tiny", "test", store.snapshot("acme", "tiny").max_seq)
    assert store.pending()[0].new_examples == 0
    assert store.interrupt_running() == 1
    assert store.run("run-k")["status"] == "failed"  # type: ignore[index]
    assert store.pending()[0].new_examples == before


def test_schema_is_created_idempotently(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    DatasetStore(url)
    DatasetStore(url)
    tables = {"trainer_examples", "trainer_runs", "trainer_regression_sets"}
    assert tables | {"trainer_regression_items"} <= set(metadata.tables)


def general(prefix: str, n: int) -> list[RegressionItem]:
    return [
        RegressionItem(f"{prefix}{i}", f"{prefix} question {i}?", f"Answer {i}.") for i in range(n)
    ]


def test_each_tenant_has_its_own_regression_set_replaced_whole(store: DatasetStore) -> None:
    assert store.regression_set("acme") == RegressionSet([], None)
    store.replace_regression("acme", general("a", 3))
    store.replace_regression("globex", general("g", 2))
    got = store.regression_set("acme")
    assert got.items == general("a", 3)  # in the order given
    assert got.updated_at is not None
    assert got.updated_at.tzinfo is not None
    assert store.regression_items("globex") == general("g", 2)

    replaced = [RegressionItem("a2", "Changed?", "Yes."), RegressionItem("new", "New?", "No.")]
    assert store.replace_regression("acme", replaced).items == replaced
    assert store.regression_items("acme") == replaced  # nothing of the old set is left
    assert store.regression_items("globex") == general("g", 2)
    assert store.replace_regression("acme", []).items == []
    assert store.regression_items("globex") == general("g", 2)


def test_a_bad_regression_set_is_refused_and_the_old_one_kept(store: DatasetStore) -> None:
    store.replace_regression("acme", general("a", 2))
    twice = [*general("b", 2), RegressionItem("b0", "Again?", "Yes.")]
    with pytest.raises(ValueError, match="repeated: b0"):
        store.replace_regression("acme", twice)
    with pytest.raises(ValueError, match="without NUL"):
        store.replace_regression("acme", [RegressionItem("n", "Why?", "No\x00pe.")])
    assert store.regression_items("acme") == general("a", 2)


def test_concurrent_replacements_never_mix_two_sets(store: DatasetStore) -> None:
    # Without the per-tenant row lock, two first replacements with different ids both commit
    # on PostgreSQL and the tenant ends up with the union of the two sets.
    sets = [general("x", 20), general("y", 20)]

    def put(barrier: threading.Barrier, items: list[RegressionItem]) -> None:
        barrier.wait()
        store.replace_regression("acme", items)

    for _ in range(5):
        store.replace_regression("acme", [])
        barrier = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(put, [barrier, barrier], sets))
        assert store.regression_items("acme") in sets


def correction(
    question: str, answer: str, rejected: str, *, tenant: str = "acme"
) -> ExampleCurated:
    """A corrected example kept for training (its id is not in the hold-out)."""
    event = curated(question, answer, tenant=tenant)
    while is_holdout(str(event.example_id)):
        event = curated(question, answer, tenant=tenant)
    return event.model_copy(update={"rejected_answer": rejected})


def test_corrections_keep_their_pair_with_lineage_per_tenant(store: DatasetStore) -> None:
    event = correction("How long do refunds take?", "Five days.", "About a week.")
    assert store.add(event) == "added"
    assert store.add(event) == "redelivered"
    assert store.add(correction("When is support open?", "Mondays.", "Mondays.")) == "added"
    approved = curated("Where is the reset?", "The account page.").model_copy(
        update={"source": "approved"}
    )
    assert store.add(approved) == "added"
    other = correction("How long do refunds take?", "Five days.", "Never.", tenant="other")
    assert store.add(other) == "added"
    # Three examples count; one pair: the equal one is refused, the approval has none.
    assert store.count("acme", "tiny") == 3
    assert store.count_pairs("acme", "tiny") == 1
    [pending] = [p for p in store.pending() if p.tenant == "acme"]
    assert pending.pairs == 1
    snap = store.snapshot("acme", "tiny")
    [pair] = snap.pairs
    assert pair == {
        "example_id": str(event.example_id),
        "interaction_id": str(event.interaction_id),
        "review_id": str(event.review_id),
        "rejected_answer": "About a week.",
    }
    version = dataset_version(snap.train + snap.holdout + snap.pairs)
    store.record_pair_training("run-1", version, [pair["example_id"]])
    [lineage] = store.pairs("acme")
    assert lineage["example_id"] == str(event.example_id)
    assert lineage["trained_in"] == [{"run_id": "run-1", "dataset_version": version}]
    [theirs] = store.pairs("other")
    assert theirs["rejected_answer"] == "Never."
    assert theirs["trained_in"] == []


def test_a_held_out_correction_keeps_its_pair_out_of_training(store: DatasetStore) -> None:
    event = curated("How long do refunds take?", "Five days.")
    while not is_holdout(str(event.example_id)):
        event = curated("How long do refunds take?", "Five days.")
    store.add(event.model_copy(update={"rejected_answer": "About a week."}))
    assert store.count_pairs("acme", "tiny") == 0
    assert store.snapshot("acme", "tiny").pairs == []
    [pair] = store.pairs("acme")
    assert pair["split"] == "holdout"
