"""Pure helpers of the reliability suite: loss checker, auth matrix, fuzz guards, RELIABILITY.md.

Nothing here does I/O except `record()` and `write_report()`, which keep each test's figures as
JSON under test-artifacts/reliability/ and turn them into the results file.
"""

from __future__ import annotations

import json
import os
import platform
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "test-artifacts" / "reliability"
REPORT = ROOT / "RELIABILITY.md"
CALLERS = ("no key", "client", "internal", "admin", "other tenant", "other admin")
# Each key of tenant `other` -> this tenant's key of the same role.
OTHER_TENANT_PEERS = {"other tenant": "client", "other admin": "admin"}
# Open by design: probes, docs, and the review UI's sign-in page (its POST needs a CSRF token).
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc", "/login"}
)


# ---------------------------------------------------------------- loss checker


@dataclass(frozen=True)
class Record:
    """One thing a stage holds for an interaction.

    Attributes:
        interaction_id: the id the gateway acknowledged.
        key: what the stage's consumers deduplicate on (an event id, or id plus revision).
    """

    interaction_id: str
    key: str


@dataclass(frozen=True)
class Stage:
    """What one stage of the loop holds, and whether its consumer still has work (lag)."""

    name: str
    records: Sequence[Record]
    lag: int = 0


@dataclass(frozen=True)
class StageFigures:
    """Loss and duplication figures of one stage."""

    stage: str
    expected: int
    held: int
    lost: int
    stuck: int
    duplicated: int
    redelivered: int
    unacknowledged: int
    missing: tuple[str, ...] = field(default=())


def check_stages(acknowledged: Iterable[str], stages: Sequence[Stage]) -> list[StageFigures]:
    """Compare the acknowledged ids with what every stage holds, stage by stage.

    An id missing from a stage counts once, at the first stage that lacks it: as *stuck* when
    that stage's consumer still lags or never committed (lag != 0: it may yet arrive), as *lost*
    otherwise. *duplicated* is the number of extra distinct dedupe keys per id (the same
    interaction counted twice even after consumers deduplicate); *redelivered* counts copies
    with the same key (at-least-once redelivery, harmless). *unacknowledged* ids are held but
    were never acknowledged.

    Args:
        acknowledged: interaction ids the gateway answered.
        stages: the loop's stages in order (capture first).

    Returns:
        One figures row per stage.
    """
    expected = set(acknowledged)
    reached = set(expected)
    rows = []
    for stage in stages:
        keys: dict[str, set[str]] = defaultdict(set)
        for record in stage.records:
            keys[record.interaction_id].add(record.key)
        held = set(keys)
        missing = sorted(reached - held)
        duplicated = sum(len(k) - 1 for iid, k in keys.items() if iid in expected)
        redelivered = len(stage.records) - sum(len(k) for k in keys.values())
        rows.append(
            StageFigures(
                stage=stage.name,
                expected=len(reached),
                held=len(held & expected),
                lost=0 if stage.lag != 0 else len(missing),
                stuck=len(missing) if stage.lag != 0 else 0,
                duplicated=duplicated,
                redelivered=redelivered,
                unacknowledged=len(held - expected),
                missing=tuple(missing[:20]),
            )
        )
        reached &= held
    return rows


def totals(rows: Sequence[StageFigures]) -> dict[str, int]:
    """Lost, stuck and duplicated summed over the stages."""
    return {
        "lost": sum(r.lost for r in rows),
        "stuck": sum(r.stuck for r in rows),
        "duplicated": sum(r.duplicated for r in rows),
    }


# ---------------------------------------------------------------- auth matrix


@dataclass(frozen=True)
class Probe:
    """One route called by one kind of caller, and the status it answered."""

    service: str
    method: str
    path: str
    caller: str
    status: int


def violations(probes: Iterable[Probe]) -> list[str]:
    """Every answer that breaks the access rules.

    The rules: a route outside PUBLIC_PATHS answers 401 without a key; nothing answers 5xx;
    an admin key is never refused with 403 where any other role is admitted; a key of another
    tenant is never admitted where this tenant's key of the same role is refused. An admitted
    key of another tenant is no violation by itself: tenant-scoped routes (hitl's queue, the
    trainer's runs and adapters) answer it with its own tenant's data, or 403/404 for ours,
    which placeholder probes cannot tell apart; the cross-tenant tests check those answers.
    """
    found = []
    by_route: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    for p in probes:
        by_route[(p.service, p.method, p.path)][p.caller] = p.status
        where = f"{p.service} {p.method} {p.path} ({p.caller})"
        if p.status >= 500:
            found.append(f"{where}: {p.status}")
        if p.caller == "no key" and p.path not in PUBLIC_PATHS and p.status != 401:
            found.append(f"{where}: {p.status} without a key (want 401)")
    for (service, method, path), got in by_route.items():
        admitted = [c for c, s in got.items() if c != "no key" and s not in (401, 403)]
        if admitted and got.get("admin") == 403:
            found.append(f"{service} {method} {path}: admin refused while {admitted} admitted")
        for other, same in OTHER_TENANT_PEERS.items():
            if other in admitted and got.get(same) in (401, 403):
                found.append(f"{service} {method} {path}: {other} admitted while {same} refused")
    return found


def matrix_rows(probes: Iterable[Probe]) -> list[list[str]]:
    """One row per route: service, method, path, then the status for each caller."""
    table: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    for p in probes:
        table[(p.service, p.method, p.path)][p.caller] = p.status
    return [
        [service, method, f"`{path}`", *(str(got.get(c, "")) for c in CALLERS)]
        for (service, method, path), got in sorted(table.items())
    ]


# ---------------------------------------------------------------- fuzz and poisoning


def spare_tenant_body(body: object, live: Collection[str], spare: str) -> object:
    """A generated body for the trainer's "start a run" route that cannot name a live tenant.

    `POST /v1/admin/train` trains the body's `tenant`; an absent or `null` body or tenant
    means the key's own, `default` for the fuzz key. A tenant that has examples would start a
    real run, so such a body gets `spare` (a tenant with none, and not the key's: the trainer
    refuses it with 403, as it refuses any tenant but the key's); every other body, valid or
    not, is sent as generated.
    """
    if body is None:
        return {"tenant": spare}
    if isinstance(body, dict) and (body.get("tenant") or "default") in live:
        return {**body, "tenant": spare}
    return body


def unapproved_examples(
    rows: Iterable[Mapping[str, object]], watched: Collection[str], approvals: Mapping[str, str]
) -> list[Mapping[str, object]]:
    """Rows of `watched` interactions that no human approval record vouches for.

    Args:
        rows: training-snapshot rows (each with `interaction_id` and `review_id`).
        watched: the interaction ids to check (the poisoned ones).
        approvals: review id -> interaction id of every approving (or correcting) review.
    """
    return [
        row
        for row in rows
        if str(row.get("interaction_id")) in watched
        and approvals.get(str(row.get("review_id"))) != str(row.get("interaction_id"))
    ]


# ---------------------------------------------------------------- results file


@dataclass
class Section:
    """One part of RELIABILITY.md: what was measured, the figures and how to reproduce them."""

    key: str
    title: str
    command: str
    figures: dict[str, int | float | str]
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def form() -> str:
    """'long' under RELIABILITY_LONG=1, else 'ci'."""
    return "long" if os.environ.get("RELIABILITY_LONG") == "1" else "ci"


def knobs() -> dict[str, str]:
    """The suite's size settings, as recorded in RELIABILITY.md."""
    long = form() == "long"
    return {
        "form": form(),
        "RELIABILITY_KILLS": os.environ.get("RELIABILITY_KILLS", "20" if long else "1"),
        "RELIABILITY_LOAD_S": os.environ.get("RELIABILITY_LOAD_S", "300" if long else "30"),
        "RELIABILITY_LOAD_RPS": os.environ.get("RELIABILITY_LOAD_RPS", "1"),
    }


def machine() -> dict[str, str]:
    """Where the figures were measured (latency figures depend on it)."""
    return {
        "CPU cores": str(os.cpu_count()),
        "1-min load average when written": f"{os.getloadavg()[0]:.1f}",
        "python": platform.python_version(),
    }


def record(section: Section, results_dir: Path = RESULTS_DIR) -> Path:
    """Keep one section's figures for the report."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{section.key}.json"
    payload = asdict(section) | {"form": form(), "at": datetime.now(UTC).isoformat()}
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def load_sections(results_dir: Path = RESULTS_DIR) -> list[Section]:
    """Sections kept by `record()`, in file-name order."""
    sections = []
    for path in sorted(results_dir.glob("*.json")):
        raw = json.loads(path.read_text())
        tables = [(list(h), [list(r) for r in rows]) for h, rows in raw.get("tables", [])]
        sections.append(
            Section(
                raw["key"],
                raw["title"],
                raw["command"],
                raw["figures"],
                tables,
                raw.get("notes", []),
            )
        )
    return sections


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


# The claims of issue #11's "done means", and where each figure comes from.
HEADLINE = (
    ("lost (kill -9 of consumers)", "10-faults", "lost"),
    ("duplicated after dedupe (kill -9 of consumers)", "10-faults", "duplicated after dedupe"),
    ("stuck (kill -9 of consumers)", "10-faults", "stuck"),
    (
        "kills between a DB write and the offset commit (failpoints)",
        "10-faults",
        "kills at a failpoint (after the DB write, before the offset commit)",
    ),
    ("lost (broker restart on s3://)", "15-broker", "lost"),
    ("unexpected 5xx (schema fuzz)", "20-fuzz", "unexpected 5xx"),
    ("malformed events never dead-lettered", "21-dead-letters", "messages never dead-lettered"),
    ("hostile adapters loaded", "23-adapters", "loaded that should not have been"),
    ("auth matrix violations", "30-auth", "violations"),
    ("cross-tenant reads", "31-tenants", "cross-tenant reads"),
    (
        "two tenants: routes x callers x tenants tried",
        "35-two-tenants",
        "routes x callers x tenants tried",
    ),
    ("two tenants: cross-tenant reads", "35-two-tenants", "cross-tenant reads"),
    ("two tenants: cross-tenant writes", "35-two-tenants", "cross-tenant writes"),
    ("two tenants: cross-tenant serving", "35-two-tenants", "cross-tenant serving"),
    ("PII canaries leaked", "32-canaries", "leaked"),
    ("unapproved poisoned examples", "33-poisoning", "unapproved poisoned examples"),
    (
        "unapproved poisoned examples in the trainer's snapshot",
        "33-poisoning",
        "unapproved poisoned examples in the trainer's training snapshot",
    ),
    ("torch.load without weights_only", "34-torch-load", "unsafe torch.load calls"),
    ("capture completeness under load", "40-load", "capture completeness"),
)


def headline(sections: Sequence[Section]) -> list[list[str]]:
    """One row per claim: the claim and its figure ('not run' where the section is missing)."""
    by_key = {s.key: s.figures for s in sections}
    return [
        [claim, str(by_key[key].get(figure, "not run")) if key in by_key else "not run"]
        for claim, key, figure in HEADLINE
    ]


def render(
    sections: Sequence[Section],
    *,
    generated_at: str,
    environment: Mapping[str, str],
    command: str = "make reliability",
) -> str:
    """The text of RELIABILITY.md."""
    out = [
        "# Reliability and security results",
        "",
        f"Generated by `{command}` at {generated_at}; do not edit by hand. "
        "`RELIABILITY_LONG=1` selects the long form; the CI-sized form runs in `make test`.",
        "",
        markdown_table(["claim", "figure"], headline(sections)),
        "",
        markdown_table(["setting", "value"], sorted(environment.items())),
    ]
    for s in sections:
        out += ["", f"## {s.title}", "", f"Command: `{s.command}`", ""]
        out.append(markdown_table(["figure", "value"], [[k, str(v)] for k, v in s.figures.items()]))
        for header, rows in s.tables:
            out += ["", markdown_table(header, rows)]
        out += [f"\n{n}" for n in s.notes]
    return "\n".join(out) + "\n"


def write_report(
    results_dir: Path = RESULTS_DIR,
    target: Path = REPORT,
    environment: Mapping[str, str] | None = None,
    command: str = "make reliability",
) -> Path:
    """Write RELIABILITY.md from the kept sections (`command` is what produced them)."""
    text = render(
        load_sections(results_dir),
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        environment=environment or {},
        command=command,
    )
    target.write_text(text)
    return target
