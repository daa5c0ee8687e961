"""Each tenant's regression set through the trainer's admin API (issue #19): an admin reads and
replaces only its own tenant's set, a PUT replaces the whole set, and a bad body gets a 400 that
says what is wrong. The service runs as in the tenancy tests (real broker, store and lifespan)."""

from __future__ import annotations

from typing import Any

import pytest
from test_routes_tenancy import ADMIN, OTHER, Trainer, trainer

from raftloop_core.testing import assert_doors_held, knock_on_doors
from raftloop_trainer.domain import MAX_REGRESSION_ITEMS, RegressionItem

pytestmark = pytest.mark.integration
__all__ = ["trainer"]  # the fixture, shared with the tenancy tests

PATH = "/v1/admin/regression"


def general(prefix: str, n: int) -> list[dict[str, str]]:
    return [
        {"id": f"{prefix}{i}", "question": f"{prefix} question {i}?", "answer": f"Answer {i}."}
        for i in range(n)
    ]


async def put(trainer: Trainer, body: Any, headers: dict[str, str] = ADMIN) -> Any:
    return await trainer.http.put(PATH, json=body, headers=headers)


async def test_each_admin_replaces_and_reads_only_its_own_tenants_set(trainer: Trainer) -> None:
    empty = await trainer.http.get(PATH, headers=ADMIN)
    assert empty.status_code == 200, empty.text
    assert empty.json() | {"max_items": 0} == {
        "tenant": "default",
        "items": [],
        "updated_at": None,
        "checked_per_run": 0,
        "max_items": 0,
    }

    ours = await put(trainer, {"items": general("ours-", 20)})
    theirs = await put(trainer, {"items": general("theirs-", 3)}, OTHER)
    assert ours.status_code == theirs.status_code == 200, (ours.text, theirs.text)
    assert ours.json()["items"] == general("ours-", 20)
    assert ours.json()["checked_per_run"] == 16  # TRAINER_REGRESSION_ITEMS caps what a run checks
    assert ours.json()["updated_at"]

    mine = (await trainer.http.get(PATH, headers=ADMIN)).json()
    other = (await trainer.http.get(PATH, headers=OTHER)).json()
    assert (mine["tenant"], mine["items"]) == ("default", general("ours-", 20))
    assert (other["tenant"], other["items"]) == ("other", general("theirs-", 3))
    assert other["checked_per_run"] == 3
    assert other["max_items"] == MAX_REGRESSION_ITEMS
    # What a run of each tenant takes comes from the same store.
    assert trainer.runner.store.regression_items("other") == [
        RegressionItem(i["id"], i["question"], i["answer"]) for i in general("theirs-", 3)
    ]

    assert (await trainer.http.get(PATH)).status_code == 401
    assert (await put(trainer, {"items": []}, {})).status_code == 401

    # A PUT replaces the whole set: nothing of the old one is left.
    # Surrounding whitespace is not part of a question or an answer.
    again = [{"id": "a4", "question": "  Changed?  ", "answer": "Yes.\n"}, *general("b", 1)]
    replaced = await put(trainer, {"items": again})
    assert replaced.status_code == 200, replaced.text
    expected = [{"id": "a4", "question": "Changed?", "answer": "Yes."}, *general("b", 1)]
    assert replaced.json()["items"] == expected
    assert (await trainer.http.get(PATH, headers=ADMIN)).json()["items"] == expected

    cleared = await put(trainer, {"items": []})
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["items"], cleared.json()["checked_per_run"]) == ([], 0)
    assert (await trainer.http.get(PATH, headers=OTHER)).json()["items"] == general("theirs-", 3)


BAD: list[tuple[Any, str | None, str]] = [
    ({"items": [], "tenant": "other"}, "tenant", "Extra inputs are not permitted"),
    ({"items": [{**general("a", 1)[0], "weight": 2}]}, "items.0.weight", "Extra inputs"),
    (
        {"items": [*general("a", 2), {"id": "a1", "question": "Q?", "answer": "A."}]},
        None,
        "item ids must be unique within the set; repeated: 'a1'",
    ),
    ({"items": general("a", MAX_REGRESSION_ITEMS + 1)}, "items", f"at most {MAX_REGRESSION_ITEMS}"),
    ({"items": [{"id": "a", "question": "   ", "answer": "A."}]}, "items.0.question", "at least 1"),
    ({"items": [{"id": "a", "question": "Q?"}]}, "items.0.answer", "Field required"),
    ({"items": [{"id": "a b", "question": "Q?", "answer": "A."}]}, "items.0.id", "pattern"),
    ({"items": [{"id": "a", "question": "Q?", "answer": "A" * 501}]}, "items.0.answer", "500"),
    ({"items": [{"id": "a", "question": "Q\u0000?", "answer": "A."}]}, "items.0", "NUL"),
    ({}, "items", "Field required"),
    ([], None, "valid dictionary"),
]


async def test_a_bad_request_gets_a_4xx_that_says_why_and_keeps_the_set(trainer: Trainer) -> None:
    await put(trainer, {"items": general("kept", 2)})
    for body, param, says in BAD:
        refused = await put(trainer, body)
        assert refused.status_code == 400, (body, refused.text)
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "invalid_request"
        assert (error["param"], says in error["message"]) == (param, True), error
    # The service's door limits (issue #18) hold for this route too.
    answers = await knock_on_doors(
        trainer.http,
        PATH,
        body={"items": general("a", 1)},
        text_field="items.0.question",
        max_body_bytes=trainer.settings.max_request_bytes,
        max_header_bytes=trainer.settings.max_header_bytes,
        headers=ADMIN,
        method="PUT",
    )
    assert_doors_held(answers, prefix="TRAINER_", param="items.0.question")
    assert (await trainer.http.get(PATH, headers=ADMIN)).json()["items"] == general("kept", 2)
