"""A tenant's own regression set (issue #19): its limits, the eval items a run takes from the
store, and a run without one that says so instead of passing as if it had checked."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import pytest

import raftloop_trainer
from raftloop_core.events import Event
from raftloop_core.registry import AdapterRegistry
from raftloop_core.settings import RuntimeSettings
from raftloop_core.testing import plan_examples
from raftloop_core.topics import Topic
from raftloop_trainer.domain import (
    MAX_REGRESSION_ITEMS,
    NO_REGRESSION_CHECK,
    GatePolicy,
    RegressionItem,
    decide,
    duplicate_ids,
    regression_set_problem,
)
from raftloop_trainer.metrics import PairedDiff
from raftloop_trainer.raft import Chunk
from raftloop_trainer.report import markdown, regression_summary, report_payload
from raftloop_trainer.runner import Runner
from raftloop_trainer.settings import TrainerSettings
from raftloop_trainer.store import DatasetStore

BASE = "tiny"


class FakeDistractors:
    """A `DistractorSource` that returns one fixed chunk."""

    def distractors(
        self, question: str, *, k: int, exclude_ids: Sequence[str], tenant: str
    ) -> list[Chunk]:
        return [Chunk("other#0", "Backups run every night at two.", "other")][:k]


class FakeSink:
    async def publish(self, topic: Topic, event: Event) -> None:
        raise AssertionError("building eval items publishes nothing")


def items(prefix: str, n: int) -> list[RegressionItem]:
    return [
        RegressionItem(f"{prefix}{i}", f"{prefix} question {i}?", f"Answer {i}.") for i in range(n)
    ]


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    settings = TrainerSettings(
        runtime=RuntimeSettings(data_dir=tmp_path / "var"), regression_items=2, distractors=1
    )
    store = DatasetStore(f"sqlite:///{tmp_path / 'dataset.sqlite3'}", holdout_fraction=0.5)
    return Runner(
        settings=settings,
        store=store,
        registry=AdapterRegistry(tmp_path / "registry"),
        sink=FakeSink(),
        distractors=FakeDistractors(),
        base_model_dir=tmp_path / "model",
        base_model=BASE,
    )


async def test_a_run_checks_its_own_tenants_items_capped_by_the_setting(runner: Runner) -> None:
    runner.store.replace_regression("acme", items("acme-", 3))
    runner.store.replace_regression("globex", items("globex-", 5))
    for event in plan_examples(12, base_model=BASE, tenant="acme"):
        runner.store.add(event)
    snap = runner.store.snapshot("acme", BASE)
    assert snap.holdout  # half are held out: the hold-out items come first

    got, summary, _ = await runner.eval_items(snap, "acme")

    held = [i for i in got if i.set == "holdout"]
    general = [i for i in got if i.set == "regression"]
    assert len(held) == len(snap.holdout)
    assert [i.item_id for i in general] == ["acme-0", "acme-1"]  # TRAINER_REGRESSION_ITEMS = 2
    assert general[0].messages[-1] == {"role": "user", "content": "acme- question 0?"}
    assert general[0].reference == "Answer 0."
    assert summary == {"items": 2, "stored": 3, "limit": 2}


async def test_a_tenant_without_a_set_is_reported_as_not_checked(runner: Runner) -> None:
    runner.store.replace_regression("globex", items("globex-", 5))
    for event in plan_examples(6, base_model=BASE, tenant="acme"):
        runner.store.add(event)

    got, summary, _ = await runner.eval_items(runner.store.snapshot("acme", BASE), "acme")

    assert [i for i in got if i.set == "regression"] == []  # never another tenant's, nor the demo's
    assert summary["items"] == 0
    assert summary["note"] == "no regression set for this tenant: PUT /v1/admin/regression"

    gain = PairedDiff("token_f1", 0.2, 0.6, 0.4, 0.3, 0.5, 25)
    decision = decide([gain], [], GatePolicy())
    assert decision.promote  # no evidence of forgetting either way: it does not reject...
    assert decision.reasons[-1] == NO_REGRESSION_CHECK  # ...and it says it did not check
    payload = report_payload(
        title="run-x",
        baseline="base",
        candidate="adapter:x",
        diffs={"holdout": [gain]},
        decision=decision,
        extra={"regression": summary},
    )
    md = markdown(payload)
    assert "**Forgetting not checked**: no regression set for this tenant" in md
    assert "not checked for forgetting" in md


def test_the_summary_says_why_nothing_was_checked() -> None:
    assert regression_summary(0, 16)["note"].startswith("no regression set")
    assert "TRAINER_REGRESSION_ITEMS is 0" in regression_summary(5, 0)["note"]
    assert regression_summary(30, 16) == {"items": 16, "stored": 30, "limit": 16}
    checked = PairedDiff("token_f1", 0.3, 0.3, 0.0, -0.05, 0.05, 16)
    gain = PairedDiff("token_f1", 0.2, 0.6, 0.4, 0.3, 0.5, 25)
    assert NO_REGRESSION_CHECK not in decide([gain], [checked], GatePolicy()).reasons


def test_the_domain_refuses_a_set_that_breaks_a_limit() -> None:
    assert regression_set_problem(items("r", 3)) is None
    assert regression_set_problem([]) is None
    too_many = regression_set_problem(items("r", MAX_REGRESSION_ITEMS + 1))
    assert f"at most {MAX_REGRESSION_ITEMS}" in (too_many or "")
    twice = [*items("r", 2), RegressionItem("r1", "Again?", "Yes.")]
    assert "repeated: r1" in (regression_set_problem(twice) or "")
    assert duplicate_ids(["a", "b", "a", "a", "b"]) == ["a", "b"]
    blank = [RegressionItem("r0", "   ", "Yes.")]
    assert "the question must be 1 to" in (regression_set_problem(blank) or "")
    nul = [RegressionItem("r0", "Why?", "Because\x00.")]
    assert "the answer" in (regression_set_problem(nul) or "")
    assert "must match" in (regression_set_problem([RegressionItem("a b", "Q?", "A.")]) or "")


def test_only_demo_tooling_imports_the_demo_package() -> None:
    # Issue #19: a real tenant's run never reads the demo handbook. Only the demo tooling
    # (`offline`, behind `raftloop eval`) and the local-distractor fallback, used when no rag
    # is configured, import it, each inside the function that needs it.
    package = Path(raftloop_trainer.__file__).parent
    importers = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n.split(".")[0] == "raftloop_demo_kb" for n in names):
                importers.add(path.name)
    assert importers == {"offline.py", "distractors.py"}
