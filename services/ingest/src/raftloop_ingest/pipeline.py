"""The interaction pipeline: chat-completed and feedback events in, ingested interactions out.

Crash safety: the output event id is derived from the source event id and the revision, and
the state row is written only after the publish is acknowledged. A crash between the two
re-reads the message (its offset was never committed), recomputes the same revision and
republishes the same event id, which consumers dedupe. Raw text is never stored or logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from uuid import UUID

from raftloop_core.events import ChatCompleted, FeedbackReceived, InteractionIngested
from raftloop_core.faults import crash_point
from raftloop_ingest.domain import (
    BatchState,
    IngestStore,
    PendingFeedback,
    Publish,
    PublishMany,
    Scrubbers,
    StoredInteraction,
    TenantMismatch,
    check_feedback_tenant,
    clean_interaction,
    ingested_event_id,
    question_hash,
    redact_feedback,
    screened_texts,
)
from raftloop_ingest.screen import screen

log = logging.getLogger(__name__)

RejectParked = Callable[[FeedbackReceived, TenantMismatch], Awaitable[None]]
"""Dead-letter parked feedback that names another tenant's interaction (its message is gone)."""


@dataclass
class Pipeline:
    """Cleans interactions and joins feedback; one instance per process.

    Feedback joins only its own tenant's interaction: `on_feedback` raises `TenantMismatch`
    for another tenant's (the caller dead-letters the message), and parked feedback of another
    tenant is handed to `reject_parked` when the interaction arrives.
    """

    store: IngestStore
    scrubbers: Scrubbers
    publish: Publish
    publish_many: PublishMany
    reject_parked: RejectParked
    max_chars: int = 20_000
    # Chat and feedback handlers run concurrently; the join must see one consistent state.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def on_chat_completed(self, event: ChatCompleted) -> InteractionIngested | None:
        """Publish the cleaned interaction unless it was ingested before."""
        out = await self.on_chat_batch([event])
        return out[0] if out else None

    async def on_chat_batch(self, events: list[ChatCompleted]) -> list[InteractionIngested]:
        """Clean a batch, publish every output, then record them in one go.

        Recording only after every publish is acknowledged keeps the crash argument of the
        module docstring: a kill before the record re-reads the batch and republishes the
        same event ids.
        """
        async with self.lock:
            state = self.store.lookup_batch([e.interaction_id for e in events])
            fresh: dict[UUID, ChatCompleted] = {}
            for event in events:
                if event.interaction_id in state.existing or event.interaction_id in fresh:
                    log.info("duplicate chat event skipped", extra=_ids(event))
                    continue
                fresh[event.interaction_id] = event
            joinable = {e.interaction_id: await self._own_pending(e, state) for e in fresh.values()}
            staged = self._mark_duplicates(
                [self._clean(e, joinable[e.interaction_id]) for e in fresh.values()]
            )
            outs = [
                InteractionIngested(
                    event_id=ingested_event_id(stored.source_event_id, 1),
                    tenant=stored.tenant,
                    interaction=stored.interaction,
                    source_event_id=stored.source_event_id,
                    revision=1,
                )
                for stored in staged
            ]
            await self.publish_many(outs)
            self.store.save_many(staged)
            crash_point("ingest.after_write")  # fault tests: written, offset not yet committed
        log.debug("interactions ingested", extra={"count": len(outs)})
        return outs

    async def _own_pending(self, event: ChatCompleted, state: BatchState) -> PendingFeedback | None:
        """The feedback parked for this interaction, unless another tenant sent it.

        Another tenant's is dead-lettered here, before the interaction is recorded (which
        clears it), so a crash in between dead-letters it again rather than losing it.
        """
        pending = state.pending.get(event.interaction_id)
        if pending is None:
            return None
        try:
            check_feedback_tenant(
                event.interaction_id, pending.tenant or event.tenant, event.tenant
            )
        except TenantMismatch as exc:
            rebuilt = FeedbackReceived(
                tenant=exc.sender, interaction_id=event.interaction_id, feedback=pending.feedback
            )
            await self.reject_parked(rebuilt, exc)
            return None
        return pending

    def _clean(self, event: ChatCompleted, pending: PendingFeedback | None) -> StoredInteraction:
        """Redact, screen and hash one chat event (duplicates are marked per batch)."""
        scrub = self.scrubbers.session(
            str(event.interaction_id), pending.mapping if pending else None
        )
        flags = screen(screened_texts(event), max_chars=self.max_chars)
        interaction = clean_interaction(
            event, scrub, flags=flags, feedback=pending.feedback if pending else None
        )
        qhash = question_hash(event.tenant, interaction.question)
        interaction = interaction.model_copy(update={"question_hash": qhash})
        return StoredInteraction(interaction, event.tenant, event.event_id, 1, scrub.mapping)

    def _mark_duplicates(self, staged: list[StoredInteraction]) -> list[StoredInteraction]:
        """Point each interaction at the first one seen with its question hash.

        One store query per tenant in the batch; within the batch, the earliest wins.
        """
        wanted: dict[str, set[str]] = {}
        for stored in staged:
            wanted.setdefault(stored.tenant, set()).add(stored.interaction.question_hash or "")
        firsts: dict[tuple[str, str], UUID] = {
            (tenant, qhash): first
            for tenant, hashes in wanted.items()
            for qhash, first in self.store.firsts(tenant, sorted(hashes)).items()
        }
        marked = []
        for stored in staged:
            interaction = stored.interaction
            key = (stored.tenant, interaction.question_hash or "")
            first = firsts.setdefault(key, interaction.interaction_id)
            if first != interaction.interaction_id:
                duplicate = interaction.model_copy(update={"duplicate_of": first})
                stored = replace(stored, interaction=duplicate)
            marked.append(stored)
        return marked

    async def on_feedback(self, event: FeedbackReceived) -> InteractionIngested | None:
        """Join feedback to its interaction: a new revision now, or parked until it arrives.

        Raises:
            TenantMismatch: the interaction (or the feedback parked for it) is another tenant's.
        """
        async with self.lock:
            if self.store.feedback_seen(event.event_id):
                return None
            stored = self.store.get(event.interaction_id)
            pending = None if stored else self.store.pending(event.interaction_id)
            # Parked feedback of another tenant keeps its place: which of the two is the
            # owner's is known only when the interaction arrives.
            owner = stored.tenant if stored else pending.tenant if pending else None
            check_feedback_tenant(event.interaction_id, event.tenant, owner)
            known = stored.mapping if stored else pending.mapping if pending else None
            scrub = self.scrubbers.session(str(event.interaction_id), known)
            feedback = redact_feedback(event.feedback, scrub)
            if stored is None:
                self.store.save_pending(
                    PendingFeedback(event.interaction_id, feedback, scrub.mapping, event.tenant),
                    feedback_event_id=event.event_id,
                )
                log.debug("feedback parked until its interaction arrives", extra=_ids(event))
                return None
            revision = stored.revision + 1
            types = sorted(set(stored.interaction.pii_types) | scrub.types)
            interaction = stored.interaction.model_copy(
                update={"feedback": feedback, "pii_types": types}
            )
            out = InteractionIngested(
                event_id=ingested_event_id(stored.source_event_id, revision),
                tenant=stored.tenant,
                interaction=interaction,
                source_event_id=stored.source_event_id,
                revision=revision,
            )
            await self.publish(out)
            self.store.save_ingested(
                StoredInteraction(
                    interaction, stored.tenant, stored.source_event_id, revision, scrub.mapping
                ),
                feedback_event_id=event.event_id,
            )
        log.debug("feedback joined", extra=_ids(event) | {"revision": revision})
        return out


def _ids(event: ChatCompleted | FeedbackReceived) -> dict[str, str]:
    return {
        "event_id": str(event.event_id),
        "interaction_id": str(event.interaction_id),
        "tenant": event.tenant,
    }
