"""The reliability suite's own arithmetic: loss checker, auth rules and the results file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from reliability_tools import (
    Probe,
    Record,
    Section,
    Stage,
    check_stages,
    load_sections,
    matrix_rows,
    record,
    render,
    spare_tenant_body,
    totals,
    unapproved_examples,
    violations,
)
from tenancy_matrix import (
    OMIT,
    Alternatives,
    Attempt,
    Operation,
    Unclassified,
    leaks,
    operations,
    plan,
)


def _records(*pairs: tuple[str, str]) -> list[Record]:
    return [Record(iid, key) for iid, key in pairs]


def test_a_clean_run_has_nothing_lost_stuck_or_duplicated() -> None:
    stages = [
        Stage("capture", _records(("a", "e1"), ("b", "e2"))),
        Stage("ingest", _records(("a", "i1"), ("b", "i2"), ("b", "i2"))),  # one redelivery
    ]
    rows = check_stages(["a", "b"], stages)
    assert totals(rows) == {"lost": 0, "stuck": 0, "duplicated": 0}
    assert rows[1].redelivered == 1
    assert rows[1].held == 2


def test_a_missing_id_counts_once_at_the_first_stage_that_lacks_it() -> None:
    stages = [
        Stage("capture", _records(("a", "e1"), ("b", "e2"))),
        Stage("ingest", _records(("a", "i1"))),
        Stage("judge", _records(("a", "j1"))),
    ]
    rows = check_stages(["a", "b"], stages)
    assert [(r.stage, r.lost, r.expected) for r in rows] == [
        ("capture", 0, 2),
        ("ingest", 1, 2),
        ("judge", 0, 1),
    ]
    assert rows[1].missing == ("b",)


def test_missing_while_the_consumer_lags_is_stuck_not_lost() -> None:
    rows = check_stages(["a"], [Stage("ingest", [], lag=3)])
    assert (rows[0].lost, rows[0].stuck) == (0, 1)


def test_two_distinct_keys_for_one_interaction_are_a_duplicate() -> None:
    rows = check_stages(["a"], [Stage("judge", _records(("a", "j1"), ("a", "j2")))])
    assert rows[0].duplicated == 1
    assert totals(rows)["duplicated"] == 1


def test_ids_never_acknowledged_are_counted_apart() -> None:
    rows = check_stages(["a"], [Stage("capture", _records(("a", "e1"), ("z", "e9")))])
    assert (rows[0].unacknowledged, rows[0].duplicated, rows[0].held) == (1, 0, 1)


def test_auth_rules_flag_open_routes_5xx_and_refused_admins() -> None:
    probes = [
        Probe("gw", "GET", "/healthz", "no key", 200),
        Probe("gw", "GET", "/v1/models", "no key", 401),
        Probe("gw", "GET", "/v1/models", "client", 200),
        Probe("gw", "GET", "/v1/models", "admin", 200),
        Probe("gw", "POST", "/open", "no key", 200),
        Probe("gw", "POST", "/crash", "client", 500),
        Probe("gw", "GET", "/x", "client", 200),
        Probe("gw", "GET", "/x", "admin", 403),
    ]
    found = violations(probes)
    assert len(found) == 3
    assert any("/open" in v and "without a key" in v for v in found)
    assert any("/crash" in v and "500" in v for v in found)
    assert any("/x" in v and "admin refused" in v for v in found)
    rows = matrix_rows(probes)
    assert rows[-1][:3] == ["gw", "POST", "`/open`"]


def test_auth_rules_flag_another_tenant_admitted_where_ours_is_refused() -> None:
    probes = [
        # Tenant-scoped routes admit both tenants' admins (each sees its own data): no violation.
        Probe("trainer", "GET", "/v1/admin/training", "admin", 200),
        Probe("trainer", "GET", "/v1/admin/training", "other admin", 200),
        Probe("trainer", "POST", "/v1/admin/train", "admin", 400),
        Probe("trainer", "POST", "/v1/admin/train", "other admin", 403),
        Probe("trainer", "POST", "/v1/admin/train", "client", 403),
        Probe("trainer", "POST", "/v1/admin/train", "other tenant", 403),
        # Another tenant's keys passing where ours of the same role are refused: violations.
        Probe("hitl", "GET", "/a", "client", 403),
        Probe("hitl", "GET", "/a", "other tenant", 200),
        Probe("hitl", "GET", "/b", "admin", 401),
        Probe("hitl", "GET", "/b", "other admin", 404),
    ]
    found = violations(probes)
    assert found == [
        "hitl GET /a: other tenant admitted while client refused",
        "hitl GET /b: other admin admitted while admin refused",
    ]


def test_sections_round_trip_into_markdown(tmp_path: Path) -> None:
    section = Section(
        "10-faults",
        "Fault injection",
        "make reliability",
        {"lost": 0, "kills": 6},
        tables=[(["stage", "lost"], [["ingest", "0"]])],
        notes=["a note"],
    )
    record(section, tmp_path)
    [loaded] = load_sections(tmp_path)
    assert loaded == section
    text = render([loaded], generated_at="now", environment={"RELIABILITY_KILLS": "2"})
    assert "## Fault injection" in text
    assert "| lost | 0 |" in text
    assert "| ingest | 0 |" in text
    assert "| RELIABILITY_KILLS | 2 |" in text
    assert "| lost (kill -9 of consumers) | 0 |" in text
    assert "| cross-tenant reads | not run |" in text


def test_a_train_body_that_would_train_a_live_tenant_names_the_spare_one() -> None:
    live = {"default", "other"}
    assert spare_tenant_body(None, live, "spare") == {"tenant": "spare"}
    assert spare_tenant_body({}, live, "spare") == {"tenant": "spare"}
    assert spare_tenant_body({"tenant": None}, live, "spare") == {"tenant": "spare"}  # the key's
    assert spare_tenant_body({"tenant": "other", "x": 1}, live, "spare") == {
        "tenant": "spare",
        "x": 1,
    }
    # Anything else goes as generated: unknown tenants and invalid bodies.
    assert spare_tenant_body({"tenant": "zz9"}, live, "spare") == {"tenant": "zz9"}
    assert spare_tenant_body({"tenant": 5}, live, "spare") == {"tenant": 5}
    assert spare_tenant_body([1, 2], live, "spare") == [1, 2]


def test_only_an_approval_of_the_same_interaction_vouches_for_an_example() -> None:
    rows: list[Mapping[str, object]] = [
        {"interaction_id": "p1", "review_id": "r1"},  # approved by its own review
        {"interaction_id": "p2", "review_id": "r1"},  # borrows another item's review
        {"interaction_id": "p3", "review_id": None},  # auto-accepted: no review at all
        {"interaction_id": "clean", "review_id": None},  # not watched
    ]
    found = unapproved_examples(rows, {"p1", "p2", "p3"}, {"r1": "p1"})
    assert [r["interaction_id"] for r in found] == ["p2", "p3"]


# ---------------------------------------------------------------- two-tenant matrix rules

SPEC = {
    "paths": {
        "/v1/items/{item_id}": {
            "get": {"parameters": [{"name": "item_id", "in": "path", "required": True}]},
        },
        "/v1/widgets/{widget_id}": {
            "delete": {"parameters": [{"name": "widget_id", "in": "path", "required": True}]},
        },
        "/v1/search": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Search"}}
                    }
                }
            },
        },
        "/v1/train": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "anyOf": [{"$ref": "#/components/schemas/Train"}, {"type": "null"}]
                            }
                        }
                    }
                }
            },
        },
        "/v1/stats": {
            "get": {"parameters": [{"name": "tenant", "in": "query", "required": False}]},
            "head": {},
        },
    },
    "components": {
        "schemas": {
            "Search": {
                "properties": {"query": {}, "tenant": {}, "k": {}},
                "required": ["query"],
            },
            "Train": {"properties": {"tenant": {}, "secret_sauce": {}}, "required": []},
        }
    },
}


def test_operations_come_from_the_openapi_document() -> None:
    ops = {(o.method, o.path): o for o in operations("svc", SPEC)}
    assert set(ops) == {
        ("GET", "/v1/items/{item_id}"),
        ("DELETE", "/v1/widgets/{widget_id}"),
        ("POST", "/v1/search"),
        ("POST", "/v1/train"),
        ("GET", "/v1/stats"),
    }
    assert ops[("POST", "/v1/search")].body_fields == ("query", "tenant", "k")
    assert ops[("POST", "/v1/search")].required_fields == ("query",)
    assert ops[("POST", "/v1/train")].body_fields == ("tenant", "secret_sauce")
    assert ops[("GET", "/v1/stats")].query_params == (("tenant", False),)


def test_a_route_the_rules_cannot_aim_is_unclassified_not_skipped() -> None:
    ops = {(o.method, o.path): o for o in operations("svc", SPEC)}
    got = plan(ops[("DELETE", "/v1/widgets/{widget_id}")], {}, manual_forms={})
    assert isinstance(got, Unclassified)
    assert "widget_id" in str(got)
    assert "classify it" in str(got)
    missing = plan(ops[("POST", "/v1/search")], {"tenant": "acme"}, manual_forms={})
    assert isinstance(missing, Unclassified)
    assert "'query'" in str(missing)


def _attempts(op: Operation, values: Mapping[str, object]) -> list[Attempt]:
    got = plan(op, values, manual_forms={})
    assert not isinstance(got, Unclassified), got
    return got


def test_the_victims_ids_and_tenant_fill_the_request() -> None:
    ops = {(o.method, o.path): o for o in operations("svc", SPEC)}
    values = {"item_id": 7, "tenant": Alternatives(("acme", OMIT)), "query": "refunds?"}
    [read] = _attempts(ops[("GET", "/v1/items/{item_id}")], values)
    assert (read.url, read.names_object) == ("/v1/items/7", True)
    named, omitted = _attempts(ops[("POST", "/v1/search")], values)
    assert named.json == {"query": "refunds?", "tenant": "acme"}
    assert named.names_tenant
    assert omitted.json == {"query": "refunds?"}
    assert not omitted.names_tenant
    by_query = _attempts(ops[("GET", "/v1/stats")], values)
    assert [a.params for a in by_query] == [{"tenant": "acme"}, {}]
    # An optional field without a rule is left out, not guessed.
    [train, _] = _attempts(ops[("POST", "/v1/train")], values)
    assert train.json == {"tenant": "acme"}


def test_a_leak_is_a_secret_the_request_did_not_send() -> None:
    secrets = {"iid-123", "acme-doc-text"}
    echo = "no document 'iid-123' among this key's tenant's documents"
    assert leaks(secrets, "/v1/documents/iid-123", echo) == []
    assert leaks(secrets, "/v1/retrieve", '{"text": "acme-doc-text"}') == ["acme-doc-text"]
    assert leaks(secrets | {""}, "/x", "anything") == []
