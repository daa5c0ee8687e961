"""Thin event handlers: decode by topic, hand to the store. All are idempotent."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import Engine

from raftloop_core import events as ev
from raftloop_core.faults import crash_point
from raftloop_core.topics import Topic
from raftloop_hitl import policies
from raftloop_hitl.domain import training_summary
from raftloop_hitl.store import ReviewStore

log = logging.getLogger(__name__)

CONSUMED = (
    Topic.INTERACTION_JUDGED,
    Topic.CHAT_FEEDBACK,
    Topic.TRAINING_RUN_FINISHED,
    Topic.ADAPTER_PROMOTED,
    Topic.ADAPTER_ROLLED_BACK,
    Topic.ADAPTER_REJECTED,
)
"""Every topic hitl reads (one consumer, so the service joins its group once)."""


class Handlers:
    """`on_<event>` per consumed event; `dispatch` picks one by topic."""

    def __init__(self, store: ReviewStore, engine: Engine) -> None:
        self.store = store
        self.engine = engine

    async def dispatch(self, topic: Topic, body: bytes) -> None:
        """Decode `body` as the event type of `topic` (a bad one raises and is dead-lettered)."""
        event = ev.adapter_for(topic).validate_json(body)
        if isinstance(event, ev.InteractionJudged):
            await self.on_interaction_judged(event)
        elif isinstance(event, ev.FeedbackReceived):
            await self.on_feedback_received(event)
        elif isinstance(event, ev.TrainingRunFinished):
            await self.on_training_run_finished(event)
        elif isinstance(event, ev.AdapterPromoted):
            await self.on_adapter_promoted(event)
        elif isinstance(event, ev.AdapterRolledBack):
            await self.on_adapter_rolled_back(event)
        elif isinstance(event, ev.AdapterRejected):
            await self.on_adapter_rejected(event)

    async def on_interaction_judged(self, event: ev.InteractionJudged) -> None:
        """interaction.judged -> review queue (or auto-accept where the policy allows)."""
        outcome = await asyncio.to_thread(self.store.ingest_judged, event)
        log.info(
            "judged interaction routed",
            extra={
                "outcome": outcome,
                "interaction_id": str(event.interaction.interaction_id),
                "tenant": event.tenant,
                "revision": event.revision,
                "overall": event.judgement.overall,
            },
        )
        crash_point("hitl.after_write")  # fault tests: written, offset not yet committed

    async def on_feedback_received(self, event: ev.FeedbackReceived) -> None:
        """chat.feedback -> attach to the item, re-route or re-prioritise it."""
        outcome = await asyncio.to_thread(self.store.add_feedback, event)
        if outcome == "other_tenant":  # ingest dead-letters the same feedback with the reason
            log.warning(
                "feedback names another tenant's interaction; not joined",
                extra={"interaction_id": str(event.interaction_id), "tenant": event.tenant},
            )

    async def on_training_run_finished(self, event: ev.TrainingRunFinished) -> None:
        """Training runs for the ops timeline."""
        summary = training_summary(event)
        await self._record(event, "training", summary, event.adapter_id, None)

    async def on_adapter_promoted(self, event: ev.AdapterPromoted) -> None:
        """Promotions for the ops timeline and the serving-adapter panel."""
        summary = f"{event.alias} -> {event.adapter_id[:12]} (run {event.run_id})"
        await self._record(event, "promoted", summary, event.adapter_id, event.revision)

    async def on_adapter_rolled_back(self, event: ev.AdapterRolledBack) -> None:
        """Rollbacks for the ops timeline and the serving-adapter panel."""
        target = event.to_adapter_id[:12] if event.to_adapter_id else "base model"
        summary = f"{event.alias} rolled back to {target}: {event.reason or ''}"
        await self._record(event, "rolled_back", summary, event.to_adapter_id, event.revision)

    async def on_adapter_rejected(self, event: ev.AdapterRejected) -> None:
        """Gate refusals for the ops timeline."""
        summary = f"{event.adapter_id[:12]} rejected: {'; '.join(event.reasons)}"
        await self._record(event, "rejected", summary, event.adapter_id, None)

    async def _record(
        self, event: ev.Event, kind: str, summary: str, adapter: str | None, revision: int | None
    ) -> None:
        await asyncio.to_thread(
            policies.add_timeline,
            self.engine,
            event_id=str(event.event_id),
            tenant=event.tenant,
            kind=kind,
            at=event.occurred_at.timestamp(),
            summary=summary,
            adapter_id=adapter,
            revision=revision,
        )
