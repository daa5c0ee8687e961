"""Two tenants, every route: no path from one tenant's keys to the other's objects (issue #17).

Tenants `acme` and `globex` each get real objects (see tenancy_world). Then every operation of
every running service's OpenAPI document is aimed at one tenant's objects by the other's
callers (client, internal and admin keys, reviewer and admin sessions of the review UI) and by
the platform's own key, in both directions: the victim's path ids, its tenant in bodies and
queries, its interaction, lease token, adapter and account names. The checks:

- reads: no response carries a secret of the victim (ids, content markers) that the request
  did not send itself; no 2xx on a path id of the victim;
- writes: what the victim sees of its objects with its own keys and session is the same
  afterwards, and never holds the intruder's text (feedback sent early included);
- serving: no chat of one tenant is answered by the other's adapter;
- no 5xx.

Routes come from each app's OpenAPI document, so a new route is tried as soon as it exists; a
route the rules cannot aim fails the test and says to classify it.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fleet import ALL, Fleet, decoded, group_lag, read_topic
from reliability_tools import Section, record
from tenancy_matrix import Attempt, Operation, Unclassified, leaks, operations, plan
from tenancy_world import (
    ADAPTER_HEADER,
    MANUAL_FORMS,
    QUESTION,
    ROUTE_VALUES,
    Session,
    Tenant,
    attack_values,
    build,
    chat,
    retrieve,
    signed_in,
    view,
    wait_for,
)

from raftloop_core.topics import Topic

pytestmark = pytest.mark.integration
COMMAND = "make reliability  # or: pytest tests/reliability/test_reliability_tenancy.py"
CALLERS = ("client", "internal", "admin", "reviewer session", "admin session", "platform")
# None now: the one there was, the judge's pairwise route (502 when its tiny model gave no
# verdict), is gone; pairwise judging runs inside the trainer's evaluation job (#19).
EXPECTED_5XX: dict[tuple[str, str, str], int] = {}
# Where the attempts' events go, in order: each group must catch up before views are compared.
DRAIN = (
    ("ingest-feedback", Topic.CHAT_FEEDBACK),
    ("hitl", Topic.CHAT_FEEDBACK),
    ("judge", Topic.INTERACTION_INGESTED),
    ("hitl", Topic.INTERACTION_JUDGED),
    ("judge-calibration", Topic.REVIEW_COMPLETED),
    ("trainer", Topic.EXAMPLE_CURATED),
)
# Topics whose events of the victim must never hold the intruder's text.
EVENT_PATH = (
    Topic.INTERACTION_INGESTED,
    Topic.INTERACTION_JUDGED,
    Topic.REVIEW_COMPLETED,
    Topic.EXAMPLE_CURATED,
)
LAST = ("/logout",)  # ends the caller's own session: tried after everything else


@dataclass(frozen=True)
class Caller:
    """Who sends an attempt: API-key headers, or a review-UI session."""

    name: str
    headers: dict[str, str]
    session: Session | None = None


@dataclass
class Outcome:
    """One attempt, who sent it and what came back."""

    direction: str
    caller: str
    attempt: Attempt
    status: int
    leaked: list[str]
    served_by_victim: bool
    excerpt: str  # around the first leaked secret, for the failure message
    aimed: bool  # the request names the victim's tenant, an object or a secret of it


@dataclass
class Direction:
    """One intruder against one victim: outcomes and what the victim saw change."""

    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    intruder_text: list[str] = field(default_factory=list)
    views: int = 0
    served: str = ""
    expected_serving: str = ""
    signs_in: bool = False
    gets: int = 0  # GET routes tried as controls with the victim's own callers
    seen_by_owner: list[str] = field(default_factory=list)  # ... that showed it its secrets


def specs(fleet: Fleet, tenant: Tenant) -> dict[str, list[Operation]]:
    """Every service's operations, from its running app's OpenAPI document."""
    found = {}
    for name in fleet.services:
        got = httpx.get(f"{fleet.url(name)}/openapi.json", headers=tenant.headers("admin"))
        assert got.status_code == 200, f"{name}: no OpenAPI document ({got.status_code})"
        found[name] = operations(name, got.json())
    return found


def plans(
    ops: dict[str, list[Operation]], victim: Tenant, text: str, password: str
) -> tuple[list[tuple[Operation, list[Attempt]]], list[str]]:
    """Each operation's attempts against `victim`, and the routes that could not be aimed."""
    planned, unclassified = [], []
    for op in (o for service in ops.values() for o in service):
        key = f"{op.service} {op.method} {op.path}"
        values = attack_values(victim, text, password)
        values |= ROUTE_VALUES[key](victim) if key in ROUTE_VALUES else {}
        got = plan(op, values, manual_forms=MANUAL_FORMS)
        if isinstance(got, Unclassified):
            unclassified.append(str(got))
        else:
            planned.append((op, got))
    planned.sort(key=lambda p: p[0].path in LAST)
    return planned, unclassified


def send(fleet: Fleet, http: httpx.Client, caller: Caller, attempt: Attempt) -> httpx.Response:
    """Send one attempt as `caller` (a session's cookie and CSRF token on hitl)."""
    headers = dict(caller.headers)
    form = {k: str(v) for k, v in (attempt.form or {}).items() if k != "files"}
    files = None
    if attempt.multipart and attempt.form:
        name, content = attempt.form["files"]
        files = [("files", (name, content, "text/markdown"))]
    client = http
    if caller.session is not None and attempt.service == "hitl":
        client = caller.session.client
        if attempt.method != "GET":
            headers["x-csrf-token"] = caller.session.csrf
            if attempt.json is None:
                form["csrf_token"] = caller.session.csrf
    return client.request(
        attempt.method,
        f"{fleet.url(attempt.service)}{attempt.url}",
        params=attempt.params or None,
        json=attempt.json,
        data=form or None,
        files=files,
        headers=headers,
    )


def _excerpt(text: str, secret: str, width: int = 160) -> str:
    at = text.find(secret)
    return text[max(0, at - width) : at + len(secret) + width]


def _difference(before: str, after: str, width: int = 120) -> str:
    at = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), 0)
    return (
        f"{before[max(0, at - width) : at + width]!r} -> {after[max(0, at - width) : at + width]!r}"
    )


def _on_topic(fleet: Fleet, topic: Topic, texts: tuple[str, ...], tenant: str | None) -> int:
    """Events on `topic` (of `tenant`, when given) that hold one of `texts`."""
    return sum(
        any(t in json.dumps(e) for t in texts)
        for e in decoded(read_topic(fleet.kafka, str(topic)))
        if tenant is None or e.get("tenant") == tenant
    )


def drain(fleet: Fleet, texts: tuple[str, ...], feedback_sent: int) -> None:
    """Wait until every event the attempts caused went through ingest, the judge and hitl."""
    wait_for(
        "the intruders' feedback on chat.feedback",
        lambda: _on_topic(fleet, Topic.CHAT_FEEDBACK, texts, None) >= feedback_sent,
    )
    for group, topic in DRAIN:

        def caught_up(g: str = group, t: str = topic) -> bool:
            return group_lag(fleet.kafka, g, t) == 0

        # After the fault and load tests of a full run the judge may still have a backlog.
        wait_for(
            f"{group} to catch up on {topic}",
            caught_up,
            timeout_s=240,
        )


def controls(
    fleet: Fleet, planned: list[tuple[Operation, list[Attempt]]], victim: Tenant, admin: Session
) -> tuple[int, list[str]]:
    """The same GET attempts by the victim's own callers: where does the owner see its secrets?

    A route that shows the owner its ids or content is one where the oracle would see a read by
    another tenant; the rest answer nothing secret to anyone.
    """
    reviewer = Session.sign_in(fleet.url("hitl"), victim.reviewer, victim.password)
    own = [
        *(Caller(role, victim.headers(role)) for role in ("client", "internal", "admin")),
        Caller("reviewer session", {}, reviewer),
        Caller("admin session", {}, admin),
    ]
    gets = [a for op, attempts in planned if op.method == "GET" for a in attempts]
    # Every page names the signed-in user: only the tenant's data counts here.
    data = victim.secrets() - {victim.admin, victim.reviewer}
    seen = set()
    with httpx.Client(timeout=60) as http:
        for attempt in gets:
            for caller in own:
                got = send(fleet, http, caller, attempt)
                if leaks(data, attempt.sent(), got.text):
                    seen.add(f"{attempt.service} {attempt.method} {attempt.path}")
    reviewer.client.close()
    return len({(a.service, a.path) for a in gets}), sorted(seen)


def attack(
    fleet: Fleet, ops: dict[str, list[Operation]], victim: Tenant, intruder: Tenant, n: int
) -> tuple[Direction, list[str]]:
    """Every route, every intruder caller, against `victim`'s objects; then compare views."""
    found = Direction(f"{intruder.name} -> {victim.name}")
    text = f"{intruder.tag} says"
    platform_text = f"platform{n}m{intruder.marker} says"  # the platform key's own writes
    planned, unclassified = plans(ops, victim, text, intruder.password)
    platform_planned, _ = plans(ops, victim, platform_text, intruder.password)
    secrets = victim.secrets()
    drain(fleet, (), 0)  # the victim's own setup (its approval's labels, say) has settled
    with signed_in(fleet, victim.admin, victim.password) as victim_admin:
        before = view(fleet, victim, victim_admin)
        reviewer = Session.sign_in(fleet.url("hitl"), intruder.reviewer, intruder.password)
        admin = Session.sign_in(fleet.url("hitl"), intruder.admin, intruder.password)
        platform = {"Authorization": f"Bearer {fleet.keys['internal']}", "x-reviewer": "tenancy"}
        callers = [
            *(Caller(role, intruder.headers(role)) for role in ("client", "internal", "admin")),
            Caller("reviewer session", {}, reviewer),
            Caller("admin session", {}, admin),
            Caller("platform", platform),
        ]
        with httpx.Client(timeout=120) as http:
            for caller in callers:
                for _, attempts in platform_planned if caller.name == "platform" else planned:
                    for attempt in attempts:
                        got = send(fleet, http, caller, attempt)
                        answer = got.text + json.dumps(dict(got.headers))
                        leaked = leaks(secrets, attempt.sent(), answer)
                        found.outcomes.append(
                            Outcome(
                                found.name,
                                caller.name,
                                attempt,
                                got.status_code,
                                leaked,
                                got.headers.get(ADAPTER_HEADER) == victim.adapter_id,
                                _excerpt(answer, leaked[0]) if leaked else "",
                                attempt.names_object
                                or attempt.names_tenant
                                or any(s and s in attempt.sent() for s in secrets),
                            )
                        )
        for session in (reviewer, admin):
            session.client.close()
        feedback_sent = sum(
            o.attempt.path == "/v1/feedback" and o.status == 202 for o in found.outcomes
        )
        drain(fleet, (text, platform_text), feedback_sent)
        wait_for("the intruder's upload indexed", lambda: intruder.tag in retrieve(fleet, intruder))
        after = view(fleet, victim, victim_admin)
        found.gets, found.seen_by_owner = controls(fleet, planned, victim, victim_admin)
    found.views = len(after)
    found.changed = [k for k, v in before.items() if after.get(k) != v]
    found.differences = [f"{k}: {_difference(before[k], after.get(k, ''))}" for k in found.changed]
    found.intruder_text = [
        f"{k} ({when}): ...{_excerpt(v, t)}..."
        for when, seen in (("before", before), ("after", after))
        for k, v in seen.items()
        for t in (intruder.tag, platform_text)
        if t in v
    ] + [
        f"{topic}: {count} events of {victim.name} hold the intruder's text"
        for topic in EVENT_PATH
        if (count := _on_topic(fleet, topic, (intruder.tag, platform_text), victim.name))
    ]
    serving = json.loads(after["adapters (trainer)"].partition(" ")[2])["serving"]
    found.expected_serving = serving["adapter_id"] or "base"
    found.served = chat(fleet, victim.keys["client"], QUESTION)[1]
    with signed_in(fleet, victim.admin, victim.password):
        found.signs_in = True
    return found, unclassified


def _figures(
    directions: list[Direction], ops: dict[str, list[Operation]]
) -> dict[str, int | float | str]:
    outcomes = [o for d in directions for o in d.outcomes]
    by_design = [o for o in outcomes if o.caller == "platform" and o.attempt.names_tenant]
    checked = [o for o in outcomes if o not in by_design]
    admitted = [o for o in outcomes if o.attempt.names_object and 200 <= o.status < 300]
    reads = [o for o in checked if o.leaked or (o in admitted and o.attempt.method == "GET")]
    unexpected = [
        o
        for o in outcomes
        if o.status >= 500
        and EXPECTED_5XX.get((o.attempt.service, o.attempt.method, o.attempt.path)) != o.status
    ]
    routes = sum(len(v) for v in ops.values())
    aimed = {(o.attempt.service, o.attempt.method, o.attempt.path) for o in outcomes if o.aimed}
    return {
        "tenants": "acme, globex (and the platform's key)",
        "services": ", ".join(ops),
        "routes (from each app's OpenAPI)": routes,
        "routes aimed at the other tenant (its id, tenant or secret in the request)": len(aimed),
        "callers per tenant attacked": len(CALLERS),
        "tenants attacked (each by the other)": len(directions),
        "routes x callers x tenants tried": routes * len(CALLERS) * len(directions),
        "requests sent": len(outcomes),
        "2xx": sum(200 <= o.status < 300 for o in outcomes),
        "unexpected 5xx": len(unexpected),
        "expected 5xx (502: the judge model gave no verdict)": sum(
            o.status >= 500 for o in outcomes
        )
        - len(unexpected),
        "cross-tenant reads": len(reads),
        "2xx on the other tenant's object id": len(admitted),
        "cross-tenant writes": sum(len(d.changed) + len(d.intruder_text) for d in directions)
        + sum(not d.signs_in for d in directions)
        + sum(o.attempt.method != "GET" for o in admitted),
        "cross-tenant serving": sum(o.served_by_victim for o in outcomes)
        + sum(d.served != d.expected_serving for d in directions),
        "victim views compared (per direction)": directions[0].views,
        "GET routes also read by the owner's own callers (controls)": directions[0].gets,
        "  of them showing the owner its data (ids or content)": len(directions[0].seen_by_owner),
        "platform-key requests naming the tenant (allowed)": len(by_design),
        "  of them returning that tenant's data (the oracle sees a read)": sum(
            bool(o.leaked) for o in by_design
        ),
    }


def _status_rows(direction: Direction) -> list[list[str]]:
    table: dict[tuple[str, str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for o in direction.outcomes:
        a = o.attempt
        table[(a.service, a.method, a.path)][o.caller].append(str(o.status))
    return [
        [s, m, f"`{p}`", *("/".join(got.get(c, [])) for c in CALLERS)]
        for (s, m, p), got in sorted(table.items())
    ]


def test_two_tenants_never_reach_each_others_objects(fleet: Fleet, tmp_path: Path) -> None:
    world = build(fleet, tmp_path)
    acme, globex = world["acme"], world["globex"]
    ops = specs(fleet, acme)
    directions, unclassified = [], []
    for n, (victim, intruder) in enumerate(((acme, globex), (globex, acme))):
        found, missing = attack(fleet, ops, victim, intruder, n)
        directions.append(found)
        unclassified += missing
    figures = _figures(directions, ops)
    problems = [
        f"{o.direction} {o.caller} {o.attempt.method} {o.attempt.url} {o.attempt.params}: "
        f"{o.status}, leaked {o.leaked} in ...{o.excerpt}..."
        for d in directions
        for o in d.outcomes
        if (o.leaked and not (o.caller == "platform" and o.attempt.names_tenant))
        or o.served_by_victim
        or (o.attempt.names_object and 200 <= o.status < 300)
    ] + [
        f"{d.name}: the victim's view changed: {d.changed}; holds the intruder's text: "
        f"{d.intruder_text}; served {d.served} (alias {d.expected_serving}); signs in "
        f"{d.signs_in}; {d.differences}"
        for d in directions
        if d.changed or d.intruder_text or d.served != d.expected_serving or not d.signs_in
    ]
    per_service = Counter(o.attempt.service for d in directions for o in d.outcomes)
    record(
        Section(
            "35-two-tenants",
            "Two tenants, every route: object access across tenants",
            COMMAND,
            figures,
            tables=[
                (
                    ["service", "requests"],
                    [[s, str(n)] for s, n in sorted(per_service.items())],
                ),
                (
                    ["service", "method", "route", *CALLERS],
                    _status_rows(directions[0]),
                ),
            ],
            notes=[
                "Objects of each tenant: a review-UI admin made with `raftloop hitl add-user` "
                "and a reviewer it added, guidelines, a routing policy, a knowledge-base "
                "document, a LoRA adapter promoted by the tenant's admin, four chats through "
                "the gateway with the openai client (one approved into the trainer's dataset, "
                "one leased, one open with the tenant's feedback, one the other tenant sent "
                "feedback on before it was queued). No training run is started (the e2e test "
                "trains): the adapter's card stands for a run's output.",
                "Each route of each app's OpenAPI document is aimed at the victim: its path "
                "ids (review item, document, adapter, user), `tenant` in bodies and queries "
                "(and left out), its interaction id, lease token, adapter id and admin's "
                "username; the intruder's own text in every free-text field. Reads: a response "
                "with a secret of the victim (ids, content markers) that the request did not "
                "carry, or a 2xx on its path id. Writes: the victim's own views (items, "
                "routing, queue, retrieval, adapters, training, models, agreement, users, "
                "guidelines and audit pages, read after ingest, the judge and hitl caught up) "
                "differ afterwards or hold the intruder's text, an event of the victim on "
                "interaction.ingested, interaction.judged, review.completed or "
                "dataset.example.curated holds it, or the victim's admin can no longer sign "
                "in. Serving: `x-raftloop-adapter` of any answer "
                "to the intruder is the victim's adapter, or the victim's chat is not served "
                "by its own alias.",
                "The status table is the globex -> acme direction (an entry per variant, e.g. "
                "the tenant named and left out). The platform key may act for every tenant "
                '(`tenants: ["*"]` in the keys file): its requests that name the victim are '
                "allowed reads, counted apart; that they return the victim's data shows the "
                "oracle finds a read when there is one.",
                "Controls: the same GET attempts sent by the owner's own keys and sessions "
                "show it its data (ids or content, not just its username) on "
                + ", ".join(f"`{r}`" for r in directions[0].seen_by_owner)
                + " (globex -> acme): there a read by the other tenant would show.",
                "Found by this suite and fixed: feedback that reached hitl before its review "
                "item (the interaction id sent by another tenant's key) was parked by id alone "
                "and joined whichever tenant's item then arrived, showing its correction to "
                "that tenant's reviewers; parked feedback now joins only its own tenant's item.",
                *(f"Problem: {p}" for p in problems[:40]),
                *(f"Unclassified: {u}" for u in unclassified),
            ],
        )
    )
    assert set(fleet.services) == set(ALL)
    assert unclassified == [], "\n".join(unclassified)
    assert figures["unexpected 5xx"] == 0, [
        f"{o.caller} {o.attempt.method} {o.attempt.url}: {o.status}"
        for d in directions
        for o in d.outcomes
        if o.status >= 500
    ]
    assert problems == [], "\n".join(problems)
    assert int(figures["  of them returning that tenant's data (the oracle sees a read)"]) > 0
    assert "hitl GET /api/v1/items/{item_id}" in directions[0].seen_by_owner
