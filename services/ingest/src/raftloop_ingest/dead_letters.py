"""Dead letters without raw text: what ingest cannot parse is parked redacted.

The shared middleware parks a message's raw bytes and the exception text, which for a chat
event can hold personal data (pydantic errors quote the input). Ingest parses its input
itself, so that it can park a redacted copy, with an error summary that never quotes input.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import BaseModel, ValidationError

from raftloop_core.events import Event
from raftloop_core.messaging import dead_letter_headers
from raftloop_core.telemetry import dead_letter_policy
from raftloop_core.topics import dead_letter
from raftloop_ingest.domain import Scrubbers, TenantMismatch

log = logging.getLogger(__name__)

REDACTED_HEADER = "x-redacted"
M = TypeVar("M", bound=BaseModel)


def describe(exc: Exception) -> str:
    """An error summary that names fields and problems but never echoes the input."""
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['type']}"
            for e in exc.errors(include_input=False, include_url=False)[:10]
        ]
        return f"ValidationError: {exc.error_count()} error(s): {'; '.join(parts)}"
    if isinstance(exc, json.JSONDecodeError):
        return f"JSONDecodeError: {exc.msg} at position {exc.pos}"
    if isinstance(exc, UnicodeDecodeError):
        return f"UnicodeDecodeError: {exc.reason} at byte {exc.start}"
    if isinstance(exc, TenantMismatch):  # names tenants and an id, never text
        return f"TenantMismatch: {exc}"
    return type(exc).__name__


class RedactingDeadLetters:
    """Parses messages of one model; parks what fails, redacted, on `<topic>.dlt`."""

    def __init__(self, broker: KafkaBroker, scrubbers: Scrubbers) -> None:
        self.broker = broker
        self.scrubbers = scrubbers
        self.parked = 0

    async def parse(self, model: type[M], msg: KafkaMessage) -> M | None:
        """The decoded event, or None after parking the message."""
        return await self.parse_record(model, msg.raw_message)

    async def parse_batch(self, model: type[M], msg: KafkaMessage) -> list[M]:
        """The decodable events of a batch message; the others are parked."""
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        parsed = [await self.parse_record(model, r) for r in records]
        return [p for p in parsed if p is not None]

    async def park_message(self, msg: KafkaMessage, exc: Exception) -> None:
        """Park a single-record message whose event parsed but cannot be handled."""
        record = msg.raw_message
        if isinstance(record, tuple):
            raise TypeError("park_message takes a single-record message, not a batch")
        await self.park(record, record.value or b"", exc)

    async def parse_record(self, model: type[M], record: Any) -> M | None:
        """The decoded event of one consumer record, or None after parking it."""
        body: bytes = record.value or b""
        try:
            return model.model_validate_json(body.decode("utf-8"))
        except (ValidationError, UnicodeDecodeError) as exc:
            await self.park(record, body, exc)
            return None

    async def park(self, record: Any, body: bytes, exc: Exception) -> None:
        """Publish a redacted copy of `body` to the dead-letter topic of its source."""
        try:
            text = body.decode("utf-8")
            value = self.scrubbers.session("dead-letter").redact(text).encode()
            note = "PII replaced by placeholders"
        except UnicodeDecodeError:
            value = b""
            note = f"undecodable payload of {len(body)} bytes dropped"
        error = describe(exc)
        headers = dead_letter_headers(
            error,
            type(exc).__name__,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            extra={REDACTED_HEADER: note},
        )
        await self._publish(record.topic, record.key, value, headers, exc)
        log.warning(
            "dead-lettered message",
            extra={"topic": record.topic, "offset": record.offset, "error": error},
        )

    async def park_event(self, topic: str, event: Event, key: bytes, exc: Exception) -> None:
        """Dead-letter an event whose message was committed long ago, without a source offset.

        Feedback parked in the store is such an event: its redacted stored form is published.
        """
        headers = dead_letter_headers(
            describe(exc),
            type(exc).__name__,
            topic=topic,
            extra={REDACTED_HEADER: "rebuilt from the redacted copy ingest had parked"},
        )
        await self._publish(topic, key, event.model_dump_json().encode(), headers, exc)
        log.warning("dead-lettered parked event", extra={"topic": topic, "error": describe(exc)})

    async def _publish(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str], exc: Exception
    ) -> None:
        await self.broker.publish(value, topic=dead_letter(topic), key=key, headers=headers)
        self.parked += 1
        dead_letter_policy(self.broker).count(topic, type(exc).__name__)
