"""The trainer's doors (issue #18): limits, unencodable text, and a train request that says
whether a run started, and why not (it used to answer 202 `started` for a run that never was)."""

from __future__ import annotations

import pytest
from test_routes_tenancy import ADMIN, OTHER, Trainer, curated, trainer, wait_for

from raftloop_core.testing import assert_doors_held, knock_on_doors
from raftloop_trainer.adapters import RunLock

pytestmark = pytest.mark.integration
__all__ = ["trainer"]  # the fixture, shared with the tenancy tests


async def test_train_refuses_what_breaks_a_limit_and_stays_up(trainer: Trainer) -> None:
    answers = await knock_on_doors(
        trainer.http,
        "/v1/admin/train",
        body={"tenant": "default"},
        text_field="tenant",
        max_body_bytes=trainer.settings.max_request_bytes,
        max_header_bytes=trainer.settings.max_header_bytes,
        headers=ADMIN,
    )
    assert_doors_held(answers, prefix="TRAINER_", param="tenant")
    assert trainer.runner.store.runs() == []


async def test_train_says_why_no_run_started(trainer: Trainer) -> None:
    nothing = await trainer.http.post("/v1/admin/train", json={}, headers=ADMIN)
    assert nothing.status_code == 409, nothing.text
    error = nothing.json()["error"]
    assert error["code"] == "nothing_to_train"
    assert "curate some" in error["message"]

    for _ in range(3):
        assert trainer.runner.store.add(curated("default")) == "added"
    # Another process (`raftloop train` on the same host) holds the run lock.
    other_process = RunLock(trainer.settings.state_dir / "run.lock")
    other_process.acquire()
    try:
        locked = await trainer.http.post("/v1/admin/train", json={}, headers=ADMIN)
    finally:
        other_process.release()
    assert locked.status_code == 409, locked.text
    assert locked.json()["error"]["code"] == "run_in_progress"
    assert "already in progress" in locked.json()["error"]["message"]
    assert trainer.runner.store.runs() == []
    assert (await trainer.http.get("/healthz")).status_code == 200


async def test_train_answers_202_with_the_run_once_it_began(trainer: Trainer) -> None:
    for _ in range(3):
        assert trainer.runner.store.add(curated("default")) == "added"

    started = await trainer.http.post("/v1/admin/train", json={}, headers=ADMIN)
    busy = await trainer.http.post("/v1/admin/train", json={}, headers=OTHER)
    assert started.status_code == 202, started.text
    body = started.json()
    assert body["started"] is True
    assert body["tenant"] == "default"
    assert body["run_id"].startswith("run-")
    # One run at a time: another tenant's admin learns that the trainer is busy, not whose run.
    assert busy.status_code == 409, busy.text
    assert busy.json()["error"]["code"] == "run_in_progress"
    assert "default" not in busy.json()["error"]["message"]

    # The stand-in model cannot train, so the run fails soon; it is the one the 202 named.
    scheduler = trainer.app.state.scheduler
    await wait_for(lambda: not scheduler.busy, 180)
    [run] = trainer.runner.store.runs()
    assert (run["run_id"], run["tenant"]) == (body["run_id"], "default")
