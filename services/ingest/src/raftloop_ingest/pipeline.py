"""The interaction pipeline: chat-completed and feedback events in, ingested interactions out.

Crash safety: the output event id is derived from the source event id and the revision, and
the state row is written only after the publish is acknowledged. A crash between the two
re-reads the message (its offset was never committed), recomputes the same revision and
republishes the same event id, which consumers dedupe. Raw text is never stored or logged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from raftloop_core.events import ChatCompleted, FeedbackReceived, InteractionIngested
from raftloop_ingest.domain import (
    IngestStore,
    PendingFeedback,
    Publish,
    Scrubbers,
    StoredInteraction,
    clean_interaction,
    ingested_event_id,
    question_hash,
    redact_feedback,
    screened_texts,
)
from raftloop_ingest.screen import screen

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """Cleans interactions and joins feedback; one instance per process."""

    store: IngestStore
    scrubbers: Scrubbers
    publish: Publish
    max_chars: int = 20_000
    # Chat and feedback handlers run concurrently; the join must see one consistent state.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def on_chat_completed(self, event: ChatCompleted) -> InteractionIngested | None:
        """Publish the cleaned interaction unless it was ingested before."""
        async with self.lock:
            if self.store.get(event.interaction_id) is not None:
                log.info("duplicate chat event skipped", extra=_ids(event))
                return None
            pending = self.store.pending(event.interaction_id)
            scrub = self.scrubbers.session(
                str(event.interaction_id), pending.mapping if pending else None
            )
            flags = screen(screened_texts(event), max_chars=self.max_chars)
            interaction = clean_interaction(
                event, scrub, flags=flags, feedback=pending.feedback if pending else None
            )
            qhash = question_hash(event.tenant, interaction.question)
            first = self.store.first_with_hash(event.tenant, qhash)
            interaction = interaction.model_copy(
                update={
                    "question_hash": qhash,
                    "duplicate_of": first if first != event.interaction_id else None,
                }
            )
            out = InteractionIngested(
                event_id=ingested_event_id(event.event_id, 1),
                tenant=event.tenant,
                interaction=interaction,
                source_event_id=event.event_id,
                revision=1,
            )
            await self.publish(out)
            self.store.save_ingested(
                StoredInteraction(interaction, event.tenant, event.event_id, 1, scrub.mapping),
                feedback_event_id=None,
            )
        log.debug(
            "interaction ingested",
            extra=_ids(event) | {"flags": len(flags), "pii_types": ",".join(scrub.types)},
        )
        return out

    async def on_feedback(self, event: FeedbackReceived) -> InteractionIngested | None:
        """Join feedback to its interaction: a new revision now, or parked until it arrives."""
        async with self.lock:
            if self.store.feedback_seen(event.event_id):
                return None
            stored = self.store.get(event.interaction_id)
            pending = None if stored else self.store.pending(event.interaction_id)
            known = stored.mapping if stored else pending.mapping if pending else None
            scrub = self.scrubbers.session(str(event.interaction_id), known)
            feedback = redact_feedback(event.feedback, scrub)
            if stored is None:
                self.store.save_pending(
                    PendingFeedback(event.interaction_id, feedback, scrub.mapping),
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
