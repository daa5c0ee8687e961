"""The broker factory, dead-letter and retry handling, and topic bootstrap for every service.

Delivery rules (DESIGN.md): producers use `acks=all` (idempotence where the broker supports it);
consumers commit after processing (`AckPolicy.NACK_ON_ERROR`). A message that can never be
processed goes to `<topic>.dlt` with the error and its source coordinates in headers, and the
partition moves on. Any other failure is treated as transient: it is re-read after an
exponential backoff, and parked on the dead-letter topic only after `retry_max_attempts`, so a
partition is never blocked forever and never spins.

Slowness is not a failure (issue #18): a handler that works longer than `max.poll.interval.ms`
keeps its consumer in the group (`kept_in_group`), so a busy machine never makes Kafka hand the
work to another member, or back to this one, while it is still in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from faststream import AckPolicy, BaseMiddleware
from faststream.kafka import KafkaBroker
from pydantic import ValidationError
from typing_extensions import override

from raftloop_core.logs import FastStreamLog
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import all_topics, dead_letter, is_dead_letter

if TYPE_CHECKING:
    from aiokafka import ConsumerRecord
    from faststream._internal.context.repository import ContextRepo
    from faststream.message import StreamMessage
    from prometheus_client import CollectorRegistry, Counter

log = logging.getLogger(__name__)

ERROR_HEADER = "x-error"
ERROR_CLASS_HEADER = "x-error-class"
SOURCE_TOPIC_HEADER = "x-source-topic"
SOURCE_PARTITION_HEADER = "x-source-partition"
SOURCE_OFFSET_HEADER = "x-source-offset"
ATTEMPTS_HEADER = "x-attempts"
FAILED_AT_HEADER = "x-failed-at"
MAX_ERROR_CHARS = 2_000


def dead_letter_headers(
    error: str,
    error_class: str,
    *,
    topic: str,
    partition: int | None = None,
    offset: int | None = None,
    attempts: int = 1,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers of a dead-lettered message, the one place they are spelled.

    `error` says what was wrong (never the payload's text), `error_class` is the exception's
    class name, and the source topic, partition and offset say where the message came from (an
    event rebuilt from a store has no offset). `extra` adds a service's own headers.
    """
    headers = {
        ERROR_HEADER: error[:MAX_ERROR_CHARS],
        ERROR_CLASS_HEADER: error_class,
        SOURCE_TOPIC_HEADER: topic,
        ATTEMPTS_HEADER: str(attempts),
        FAILED_AT_HEADER: str(time.time()),
    }
    if partition is not None:
        headers[SOURCE_PARTITION_HEADER] = str(partition)
    if offset is not None:
        headers[SOURCE_OFFSET_HEADER] = str(offset)
    return headers | dict(extra or {})


class PoisonMessage(Exception):
    """A message that can never be processed: it goes to the dead-letter topic at once."""


PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    ValidationError,
    PoisonMessage,
    UnicodeDecodeError,
    json.JSONDecodeError,
)
"""Failures that no retry can fix."""


def is_permanent(exc: BaseException) -> bool:
    """Whether `exc` means the message itself is bad."""
    return isinstance(exc, PERMANENT_ERRORS)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped, for transient failures."""

    max_attempts: int = 8
    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before re-reading after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def exhausted(self, attempt: int) -> bool:
        """Whether no further attempt should be made."""
        return attempt >= self.max_attempts


class _AttemptLog:
    """Failed attempts per (topic, partition, offset); bounded so it can never grow forever."""

    def __init__(self, limit: int = 10_000) -> None:
        self._counts: OrderedDict[tuple[str, int, int], int] = OrderedDict()
        self._limit = limit

    def fail(self, key: tuple[str, int, int]) -> int:
        count = self._counts.pop(key, 0) + 1
        self._counts[key] = count
        while len(self._counts) > self._limit:
            self._counts.popitem(last=False)
        return count

    def forget(self, key: tuple[str, int, int]) -> None:
        self._counts.pop(key, None)


class DeadLetterPolicy:
    """Builds a `DeadLetterMiddleware` per message; holds the shared retry bookkeeping."""

    def __init__(self, broker: KafkaBroker, settings: KafkaSettings) -> None:
        self.broker = broker
        self.max_message_bytes = settings.max_message_bytes
        self.retry = RetryPolicy(
            settings.retry_max_attempts, settings.retry_backoff_s, settings.retry_backoff_max_s
        )
        self.attempts = _AttemptLog()
        self.keepalive_s = keepalive_interval(settings)
        self.dead_lettered = 0
        self.counter: Counter | None = None
        self.service = "raftloop"

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> DeadLetterMiddleware:
        """FastStream calls this once per consumed message."""
        return DeadLetterMiddleware(msg, context=context, policy=self)

    def count(self, topic: str, error: str) -> None:
        """Count one message from `topic` parked because of an `error` (exception class)."""
        self.dead_lettered += 1
        if self.counter is not None:
            self.counter.labels(self.service, topic, error).inc()

    async def park(
        self, record: ConsumerRecord[Any, Any], exc: BaseException, attempts: int
    ) -> None:
        """Publish the raw message to its dead-letter topic with the error in headers."""
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        headers = dead_letter_headers(
            error,
            type(exc).__name__,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            attempts=attempts,
        )
        value = record.value if isinstance(record.value, bytes) else b""
        await self.broker.publish(
            value, topic=dead_letter(record.topic), key=record.key, headers=headers
        )
        self.count(record.topic, type(exc).__name__)
        log.warning(
            "dead-lettered message",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error": error,
            },
        )


class DeadLetterMiddleware(BaseMiddleware[Any, Any]):
    """Parks permanent failures on `<topic>.dlt`; backs off, then parks, transient ones."""

    def __init__(self, msg: Any, /, *, context: ContextRepo, policy: DeadLetterPolicy) -> None:
        super().__init__(msg, context=context)
        self.policy = policy

    @property
    def _record(self) -> ConsumerRecord[Any, Any] | None:
        record = self.msg
        return record if hasattr(record, "topic") and hasattr(record, "offset") else None

    @override
    async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
        size = len(msg.body or b"")
        record = self._record
        # An oversize message is parked as it is, so its dead-letter copy must still be readable.
        if size > self.policy.max_message_bytes and not (record and is_dead_letter(record.topic)):
            raise PoisonMessage(
                f"message of {size} bytes exceeds the {self.policy.max_message_bytes}-byte limit "
                "(KAFKA_MAX_MESSAGE_BYTES)"
            )
        async with kept_in_group(getattr(msg, "consumer", None), self.policy.keepalive_s):
            return await call_next(msg)

    @override
    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        record = self._record
        if record is None:
            return False
        key = (record.topic, record.partition, record.offset)
        if exc_val is None:
            self.policy.attempts.forget(key)
            return False
        if not isinstance(exc_val, Exception):
            return False  # cancellation and interpreter exits must propagate
        if is_dead_letter(record.topic):
            # Never dead-letter a dead-letter topic: log it and let the partition move on.
            log.error("unprocessable dead letter skipped", extra={"error": repr(exc_val)})
            return True
        if is_permanent(exc_val):
            await self.policy.park(record, exc_val, attempts=1)
            return True
        attempt = self.policy.attempts.fail(key)
        if self.policy.retry.exhausted(attempt):
            self.policy.attempts.forget(key)
            await self.policy.park(record, exc_val, attempts=attempt)
            return True
        delay = self.policy.retry.delay(attempt)
        log.warning(
            "transient failure; re-reading after backoff",
            extra={
                "topic": record.topic,
                "offset": record.offset,
                "attempt": attempt,
                "delay_s": round(delay, 3),
                "error": repr(exc_val),
            },
        )
        await asyncio.sleep(delay)
        return False  # NACK_ON_ERROR seeks back, so the message is read again


def keepalive_interval(settings: KafkaSettings) -> float:
    """How often a busy handler's consumer polls: well inside `max.poll.interval.ms`."""
    return min(30.0, settings.max_poll_interval_ms / 1000 / 4)


@contextlib.asynccontextmanager
async def kept_in_group(consumer: Any, interval_s: float) -> AsyncIterator[None]:
    """Keep `consumer` in its group while the block runs, however long it takes.

    aiokafka leaves the group when `getmany` is not called for `max_poll_interval_ms`
    (aio-libs/aiokafka#848); the member's work is then handed to another member (or back to
    this one) while it is still in progress, and its commit fails. The known remedy: pause every
    assigned partition and keep polling; a paused partition returns no records, so the poll
    only tells the client that this member is alive. Heartbeats go on in aiokafka's own task.
    Partitions are resumed when the block ends. Consumers without `pause` (FastStream's
    in-memory test broker) are left alone.
    """
    if not all(hasattr(consumer, name) for name in ("pause", "resume", "getmany", "assignment")):
        yield
        return
    paused: set[Any] = set()
    poller = asyncio.create_task(_poll_paused(consumer, interval_s, paused), name="keepalive")
    try:
        yield
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        if paused:
            consumer.resume(*(paused & consumer.assignment()))


async def _poll_paused(consumer: Any, interval_s: float, paused: set[Any]) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(interval_s)
        if not paused:
            log.info(
                "handler still busy; partitions paused and the consumer kept in its group",
                extra={"busy_s": round(time.monotonic() - started, 1)},
            )
        fresh = consumer.assignment() - consumer.paused()
        if fresh:
            consumer.pause(*fresh)
            paused |= fresh
        try:
            records = await consumer.getmany(timeout_ms=0)
        # Whatever the poll raised (a coordination error, most often), aiokafka recovers on its
        # own; the keepalive must outlive it, or a busy handler loses its partitions.
        except Exception as exc:  # noqa: BLE001
            log.warning("keepalive poll failed", extra={"error": repr(exc)})
            continue
        # A partition assigned between the pause and the poll: give its records back.
        for tp, batch in records.items():
            if batch:
                consumer.seek(tp, batch[0].offset)


def make_broker(
    settings: KafkaSettings,
    *,
    client_id: str | None = None,
    registry: CollectorRegistry | None = None,
    service: str = "raftloop",
    **kwargs: Any,
) -> KafkaBroker:
    """The broker every service uses: acks=all, dead-letter and retry middleware installed.

    With a Prometheus `registry`, it also counts messages consumed and published per topic,
    handler errors and dead letters, and reports subscriber lag
    (`raftloop_core.telemetry.instrument_broker`).
    """
    broker = KafkaBroker(
        settings.servers,
        client_id=client_id or settings.client_id,
        acks="all",
        enable_idempotence=settings.enable_idempotence,
        request_timeout_ms=settings.request_timeout_ms,
        max_request_size=settings.max_message_bytes + 64 * 1024,
        security=_security(settings),
        # Per-message "Received"/"Processed" lines cost ~30% of throughput; keep them at DEBUG.
        log_level=logging.DEBUG,
        **{
            # FastStream's own logger prints plain text to stdout; this one writes our JSON
            # lines. A caller may pass its own (`logger=None`: a CLI that prints its own lines).
            "logger": FastStreamLog(),
            **kwargs,
        },
    )
    policy = DeadLetterPolicy(broker, settings)
    broker.insert_middleware(policy)
    if registry is not None:
        from raftloop_core.telemetry import instrument_broker

        instrument_broker(broker, registry, service=service)
    return broker


def consumer_options(settings: KafkaSettings, *, group_id: str) -> dict[str, Any]:
    """Subscriber keyword arguments for at-least-once consumption in a group."""
    return {
        "group_id": group_id,
        # Tansu reports wrong end offsets after batched writes; a new group starts at the beginning.
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "max_partition_fetch_bytes": settings.max_message_bytes + 64 * 1024,
        "ack_policy": AckPolicy.NACK_ON_ERROR,
    }


def _security(settings: KafkaSettings) -> Any:
    from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

    if settings.security_protocol == "PLAINTEXT":
        return None
    use_ssl = settings.security_protocol.endswith("SSL")
    if settings.sasl_mechanism is None:
        import ssl

        return BaseSecurity(ssl_context=ssl.create_default_context(), use_ssl=use_ssl)
    if settings.sasl_username is None or settings.sasl_password is None:
        raise ValueError(
            "KAFKA_SASL_MECHANISM is set but KAFKA_SASL_USERNAME or KAFKA_SASL_PASSWORD is not"
        )
    cls = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}[
        settings.sasl_mechanism
    ]
    return cls(
        username=settings.sasl_username,
        password=settings.sasl_password.get_secret_value(),
        use_ssl=use_ssl,
    )


class BrokerUnreachable(RuntimeError):
    """No broker answered at the configured address."""


def admin_client(settings: KafkaSettings, *, timeout_s: float = 5.0) -> Any:
    """A kafka-python admin client, or a clear error when the broker cannot be reached."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        return KafkaAdminClient(
            bootstrap_servers=settings.servers,
            client_id=f"{settings.client_id}-admin",
            request_timeout_ms=int(timeout_s * 1000),
            **_kafka_python_security(settings),
        )
    except KafkaError as exc:
        raise BrokerUnreachable(
            f"no Kafka broker answered at {settings.bootstrap_servers} ({type(exc).__name__}); "
            "start one with `raftloop broker` or set KAFKA_BOOTSTRAP_SERVERS"
        ) from exc


def _kafka_python_security(settings: KafkaSettings) -> dict[str, Any]:
    opts: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.sasl_mechanism:
        opts |= {
            "sasl_mechanism": settings.sasl_mechanism,
            "sasl_plain_username": settings.sasl_username,
            "sasl_plain_password": (
                settings.sasl_password.get_secret_value() if settings.sasl_password else None
            ),
        }
    return opts


def ensure_topics(settings: KafkaSettings, topics: dict[str, int] | None = None) -> list[str]:
    """Create every topic (and dead-letter topic) that does not exist yet; return those created.

    Idempotent: existing topics are left as they are.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = all_topics() if topics is None else topics
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, wanted[name], settings.replication_factor)])
            except TopicAlreadyExistsError:
                continue  # another service created it first
        return missing
    finally:
        admin.close()
