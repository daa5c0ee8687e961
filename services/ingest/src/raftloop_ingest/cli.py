"""`raftloop kb add|remove`: knowledge documents from the command line."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from raftloop_core.events import DEFAULT_TENANT, TENANT_PATTERN
from raftloop_core.messaging import BrokerUnreachable, ensure_topics, make_broker
from raftloop_core.topics import TOPIC_SPECS, Topic, dead_letter
from raftloop_ingest.app import knowledge_base
from raftloop_ingest.domain import document_id
from raftloop_ingest.kb import KnowledgeBase, Outcome
from raftloop_ingest.main import build_store
from raftloop_ingest.settings import IngestSettings

DOCUMENT_ID = re.compile(r"^[0-9a-f]{32}$")
TenantOpt = Annotated[str, typer.Option(help="Tenant the documents belong to.")]


def register(app: typer.Typer) -> None:
    """Add the `kb` command group to the root `raftloop` program."""
    kb = typer.Typer(help="Knowledge documents: add or remove.", no_args_is_help=True)
    kb.command("add")(add)
    kb.command("remove")(remove)
    app.add_typer(kb, name="kb")


def add(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (txt, md, html, pdf).")],
    tenant: TenantOpt = DEFAULT_TENANT,
) -> None:
    """Publish documents; unchanged ones are skipped, bad ones get one error line each."""
    outcomes = _run(lambda kb: kb.add_paths(paths, tenant=tenant), tenant)
    _report(outcomes)


def remove(
    targets: Annotated[list[str], typer.Argument(help="Document paths (as added) or ids.")],
    tenant: TenantOpt = DEFAULT_TENANT,
) -> None:
    """Publish the deletion of documents, named by the path they were added from or their id."""
    # A 32-hex-digit target is a document id; anything else is the path it was added from,
    # whose resolved form the id was derived from (and which never leaves this machine).
    ids = [
        t if DOCUMENT_ID.match(t) else document_id(tenant, str(Path(t).resolve())) for t in targets
    ]

    async def go(kb: KnowledgeBase) -> list[Outcome]:
        return [
            await kb.remove(doc_id, tenant=tenant, label=target)
            for doc_id, target in zip(ids, targets, strict=True)
        ]

    _report(_run(go, tenant))


def _run(action, tenant: str) -> list[Outcome]:  # type: ignore[no-untyped-def]
    if not re.match(TENANT_PATTERN, tenant):
        _fail(f"tenant {tenant!r} is not a valid slug (lowercase letters, digits, - and _)")
    settings = IngestSettings()
    topic = settings.topic(Topic.KB_DOCUMENT)
    try:
        spec = TOPIC_SPECS[Topic.KB_DOCUMENT]
        ensure_topics(settings.kafka, {topic: spec.partitions, dead_letter(topic): 1})
    except BrokerUnreachable as exc:
        _fail(str(exc))

    async def go() -> list[Outcome]:
        broker = make_broker(
            settings.kafka, client_id=f"{settings.kafka.client_id}-kb", logger=None
        )
        async with broker:
            await broker.start()
            kb = knowledge_base(settings, build_store(settings), broker)
            result: list[Outcome] = await action(kb)
            return result

    return asyncio.run(go())


def _report(outcomes: list[Outcome]) -> None:
    errors = [o for o in outcomes if o.status == "error"]
    for outcome in outcomes:
        typer.echo(outcome.line(), err=outcome.status == "error")
    counts = {
        s: sum(o.status == s for o in outcomes) for s in ("submitted", "unchanged", "deleted")
    }
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    typer.echo(f"{summary or 'nothing done'}; {len(errors)} error(s)")
    if errors:
        raise typer.Exit(1)


def _fail(message: str) -> None:
    typer.echo(f"raftloop kb: error: {message}", err=True)
    sys.exit(2)
