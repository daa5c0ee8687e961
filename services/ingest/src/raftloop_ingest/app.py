"""ingest: the interaction pipeline's consumers, the document upload API and the ops routes.

Consumes `Topic.CHAT_COMPLETED` and `Topic.CHAT_FEEDBACK` (group `ingest`) and publishes
`InteractionIngested` on `Topic.INTERACTION_INGESTED` (key: interaction id). Feedback joins
only an interaction of its own tenant; another tenant's goes to `<topic>.dlt` with the reason
in `x-error` (`TenantMismatch: ...`). Documents arrive
through `POST /v1/documents` (multipart `files`, internal or admin key; the tenant is the
key's) or `raftloop kb add`, and leave as `DocumentSubmitted` / `DocumentDeleted` on
`Topic.KB_DOCUMENT` (key: document id).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from fastapi import FastAPI
from faststream.kafka import KafkaBroker, KafkaMessage
from prometheus_client import CollectorRegistry, Counter

from raftloop_core.api import KeyStore, install_error_handlers
from raftloop_core.events import (
    ChatCompleted,
    Event,
    FeedbackReceived,
    InteractionIngested,
    event_key,
)
from raftloop_core.limits import install_request_guards
from raftloop_core.messaging import RetryPolicy, consumer_options, make_broker
from raftloop_core.service import add_ops_routes, blocking_check, broker_check
from raftloop_core.topics import Topic
from raftloop_ingest.dead_letters import RedactingDeadLetters
from raftloop_ingest.domain import IngestStore, Publish, PublishMany, Scrubbers, TenantMismatch
from raftloop_ingest.kb import KnowledgeBase
from raftloop_ingest.pipeline import Pipeline
from raftloop_ingest.routes import documents_router
from raftloop_ingest.sandbox import SandboxedParser
from raftloop_ingest.settings import IngestSettings

log = logging.getLogger(__name__)
_NO_INTERACTION = UUID(int=0)


def publisher_for(broker: KafkaBroker, settings: IngestSettings, topic: Topic) -> Publish:
    """Publish events on `topic` (with the settings' prefix), keyed per `event_key`."""
    name = settings.topic(topic)

    async def publish(event: Event) -> None:
        await broker.publish(event, topic=name, key=event_key(topic, event))

    return publish


def batch_publisher_for(broker: KafkaBroker, settings: IngestSettings, topic: Topic) -> PublishMany:
    """Publish many events on `topic`, waiting once for all the broker's acknowledgements.

    Every event is handed to the producer first (`no_confirm` returns the future of its
    acknowledgement), so the producer sends them in as few requests as it can; a task per
    event and a wait per event cost more than the cleaning around them.
    """
    name = settings.topic(topic)

    async def publish_many(events: Sequence[Event]) -> None:
        acks = [
            await broker.publish(
                event,
                topic=name,
                key=event_key(topic, event),
                correlation_id=str(event.event_id),
                no_confirm=True,
            )
            for event in events
        ]
        await asyncio.gather(*acks)

    return publish_many


def knowledge_base(
    settings: IngestSettings, store: IngestStore, broker: KafkaBroker
) -> KnowledgeBase:
    """Documents parsed in child processes, published as events that fit one broker message."""
    return KnowledgeBase(
        store,
        publisher_for(broker, settings, Topic.KB_DOCUMENT),
        SandboxedParser(settings.sandbox_limits(), concurrency=settings.parse_concurrency),
        max_event_bytes=settings.kafka.max_message_bytes,
    )


class IngestMetrics:
    """Prometheus counters of the pipeline."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ingested = Counter(
            "raftloop_ingest_interactions", "Ingested revisions.", ["kind"], registry=registry
        )
        self.flags = Counter(
            "raftloop_ingest_flags", "Poison-screen flags raised.", ["code"], registry=registry
        )
        self.pii = Counter(
            "raftloop_ingest_pii", "Interactions with PII, by type.", ["type"], registry=registry
        )

    def observe(self, out: InteractionIngested | None) -> None:
        """Count (and log) one published revision."""
        if out is None:
            return
        interaction = out.interaction
        log.info(
            "interaction ingested",
            extra={
                "interaction_id": str(interaction.interaction_id),
                "tenant": out.tenant,
                "revision": out.revision,
                "duplicate_of": interaction.duplicate_of,
                "flags": ",".join(f.code for f in interaction.flags),
                "pii_types": ",".join(interaction.pii_types),
            },
        )
        kind = "duplicate" if interaction.duplicate_of else "new"
        self.ingested.labels(kind if out.revision == 1 else "feedback").inc()
        for flag in interaction.flags if out.revision == 1 else ():
            self.flags.labels(flag.code).inc()
        for pii in interaction.pii_types if out.revision == 1 else ():
            self.pii.labels(pii).inc()


def subscribe(
    broker: KafkaBroker,
    settings: IngestSettings,
    pipeline: Pipeline,
    m: IngestMetrics,
    dead: RedactingDeadLetters,
) -> None:
    """Register the chat and feedback consumers on `broker`."""
    # One group per topic: two consumers of one group on different topics made the embedded
    # broker's rebalances stall on restart.
    chat_options = consumer_options(settings.kafka, group_id=settings.group_id)
    feedback_options = consumer_options(settings.kafka, group_id=f"{settings.group_id}-feedback")

    retry = RetryPolicy(
        settings.kafka.retry_max_attempts,
        settings.kafka.retry_backoff_s,
        settings.kafka.retry_backoff_max_s,
    )
    failures = {"count": 0}

    # Batches: outputs of a batch are published concurrently and committed once, which is
    # where the throughput is (see bench/bench_ingest.py); ordering per key is unchanged.
    @broker.subscriber(  # type: ignore[untyped-decorator]  # FastStream's overloads
        settings.topic(Topic.CHAT_COMPLETED),
        batch=True,
        max_records=settings.batch_size,
        batch_timeout_ms=settings.batch_timeout_ms,
        decoder=_raw_body,
        **chat_options,
    )
    async def on_chat_completed(msg: KafkaMessage) -> None:
        """chat.completed -> interaction.ingested (revision 1), a batch at a time."""
        events = await dead.parse_batch(ChatCompleted, msg)
        try:
            outs = await pipeline.on_chat_batch(events)
        except Exception:
            # The shared middleware does not back off for batches: wait here, then let the
            # batch be re-read (it is idempotent), so a failing store never spins.
            failures["count"] += 1
            await asyncio.sleep(retry.delay(min(failures["count"], 8)))
            raise
        failures["count"] = 0
        for out in outs:
            m.observe(out)

    @broker.subscriber(settings.topic(Topic.CHAT_FEEDBACK), **feedback_options)  # type: ignore[untyped-decorator]
    async def on_feedback(msg: KafkaMessage) -> None:
        """chat.feedback -> interaction.ingested (next revision), or parked until the chat."""
        event = await dead.parse(FeedbackReceived, msg)
        if event is None:
            return
        try:
            m.observe(await pipeline.on_feedback(event))
        except TenantMismatch as exc:  # another tenant's interaction: never joined
            await dead.park_message(msg, exc)


async def _raw_body(msg: KafkaMessage) -> Any:
    """Skip FastStream's JSON decoding: the handler parses each record itself."""
    return msg.body


def create_app(
    settings: IngestSettings, *, store: IngestStore, scrubbers: Scrubbers, keys: KeyStore
) -> FastAPI:
    """Wire the consumers, the document API and the ops routes."""
    registry = CollectorRegistry()
    broker = make_broker(
        settings.kafka,
        client_id=f"{settings.kafka.client_id}-ingest",
        registry=registry,
        service="ingest",
    )
    metrics = IngestMetrics(registry)
    dead = RedactingDeadLetters(broker, scrubbers)
    feedback_topic = settings.topic(Topic.CHAT_FEEDBACK)

    async def reject_parked(event: FeedbackReceived, exc: TenantMismatch) -> None:
        key = event_key(Topic.CHAT_FEEDBACK, event)
        await dead.park_event(feedback_topic, event, key, exc)

    pipeline = Pipeline(
        store,
        scrubbers,
        publisher_for(broker, settings, Topic.INTERACTION_INGESTED),
        batch_publisher_for(broker, settings, Topic.INTERACTION_INGESTED),
        reject_parked,
        max_chars=settings.max_chars,
    )
    kb = knowledge_base(settings, store, broker)
    subscribe(broker, settings, pipeline, metrics, dead)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            await broker.start()
        except Exception as exc:
            raise RuntimeError(
                f"ingest cannot reach the Kafka broker at {settings.kafka.bootstrap_servers} "
                f"({type(exc).__name__}); start it with `raftloop broker` or set "
                "KAFKA_BOOTSTRAP_SERVERS"
            ) from exc
        # The analyzer's patterns, spaCy's vocabulary and the clients live as long as the
        # process: out of the collector's view, a full collection no longer walks them all
        # (hundreds of ms that stall a batch).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await broker.stop()

    app = FastAPI(title="raftloop ingest", lifespan=lifespan)
    app.state.broker = broker
    app.state.pipeline = pipeline
    install_error_handlers(app)
    install_request_guards(app, settings.request_limits(settings.upload_limits()))
    add_ops_routes(
        app,
        service="ingest",
        registry=registry,
        checks=[
            broker_check(broker),
            # Any read proves the database answers; the nil id is never stored.
            blocking_check("database", lambda: store.get(_NO_INTERACTION)),
        ],
        keys=keys,
        protect=settings.runtime.ops_protected,
    )
    app.include_router(documents_router(kb, keys, max_bytes=settings.max_upload_bytes))
    return app
