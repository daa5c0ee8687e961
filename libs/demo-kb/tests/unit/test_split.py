"""The train/holdout split is a fixed rule on the question id."""

import hashlib

import raftloop_demo_kb as kb


def test_split_is_the_documented_sha256_rule() -> None:
    for q in kb.questions():
        expected = int(hashlib.sha256(q.id.encode()).hexdigest(), 16) % 5 == 0
        assert (kb.split(q) == "holdout") is expected
        assert kb.split(q.id) == kb.split(q)


def test_split_sizes_partition_the_questions() -> None:
    train, holdout = kb.train_questions(), kb.holdout_questions()
    total = len(kb.questions())
    assert train
    assert holdout
    assert len(train) + len(holdout) == total
    assert {q.id for q in train}.isdisjoint(q.id for q in holdout)
    assert 0.15 <= len(holdout) / total <= 0.25


def test_holdout_covers_many_documents() -> None:
    documents = {q.document for q in kb.holdout_questions()}
    assert len(documents) >= len(kb.documents()) // 2


def test_regression_set_is_general_and_well_formed() -> None:
    regression = kb.regression_questions()
    assert 25 <= len(regression) <= 40
    assert len({r.id for r in regression}) == len(regression)
    assert len({r.question for r in regression}) == len(regression)
    for item in regression:
        assert "vellumbox" not in (item.question + item.answer).lower()
        assert item.answer.strip()
