"""Batch consumption of ingested interactions: judge concurrently, commit after the batch.

A batch subscriber lets several messages be judged at once while the offset is only committed
once every message of the batch is done, so at-least-once holds per partition. A malformed
message is dead-lettered on its own; a failure (an error the client's retries did not fix, or an
endpoint stalled past `JUDGE_STALL_TIMEOUT_S`) backs off and the batch is re-read (finished items
are skipped via the store), and an item is parked once its retry budget is spent.

Slowness is backpressure, not failure (issue #18): a batch takes as long as the endpoint needs.
No deadline throws away the generations in flight, and the consumer stays in its group while it
waits (`raftloop_core.messaging.kept_in_group`, installed for every handler by the broker).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from raftloop_core.events import ExampleCurated, InteractionIngested
from raftloop_core.messaging import DeadLetterPolicy, PoisonMessage
from raftloop_judge import domain
from raftloop_judge.service import JudgeService

log = logging.getLogger(__name__)
_INGESTED = TypeAdapter(InteractionIngested)
_CURATED = TypeAdapter(ExampleCurated)
E = TypeVar("E")


async def decode_batch(
    records: Sequence[Any], adapter: TypeAdapter[E], policy: DeadLetterPolicy
) -> list[tuple[Any, E]]:
    """The records that decode, each with its event; the others are dead-lettered at once."""
    decoded = []
    for record in records:
        value = record.value if isinstance(record.value, bytes) else b""
        try:
            if len(value) > policy.max_message_bytes:
                raise PoisonMessage(
                    f"message of {len(value)} bytes exceeds the "
                    f"{policy.max_message_bytes}-byte limit (KAFKA_MAX_MESSAGE_BYTES)"
                )
            decoded.append((record, adapter.validate_json(value)))
        except (ValidationError, PoisonMessage, UnicodeDecodeError, json.JSONDecodeError) as exc:
            await policy.park(record, exc, attempts=1)
    return decoded


class BatchConsumer:
    """Turns one polled batch of records into judgements."""

    def __init__(self, service: JudgeService, policy: DeadLetterPolicy) -> None:
        self.service = service
        self.policy = policy

    async def consume(self, records: Sequence[Any]) -> None:
        """Judge a batch; raise (so the batch is re-read) after backoff on transient failure."""
        items = await decode_batch(records, _INGESTED, self.policy)
        if not items:
            return
        failures = await self.service.handle_many([event for _, event in items])
        if failures:
            await self._retry_or_park(items, failures[0])

    async def _retry_or_park(
        self, items: list[tuple[Any, InteractionIngested]], exc: BaseException
    ) -> None:
        pending = []
        for record, event in items:
            if await asyncio.to_thread(self.service.store.is_processed, event.event_id):
                continue
            key = (record.topic, record.partition, record.offset)
            attempt = self.policy.attempts.fail(key)
            if self.policy.retry.exhausted(attempt):
                self.policy.attempts.forget(key)
                await self.policy.park(record, exc, attempts=attempt)
                out_id = domain.output_event_id(
                    event.interaction.interaction_id, event.revision, self.service.judge.version
                )
                await asyncio.to_thread(self.service.store.mark_processed, event.event_id, out_id)
            else:
                pending.append(attempt)
        if pending:
            delay = self.policy.retry.delay(max(pending))
            log.warning(
                "transient judging failure; re-reading the batch after backoff",
                extra={"error": repr(exc), "delay_s": round(delay, 3)},
            )
            await asyncio.sleep(delay)
            raise exc


class CuratedBatchConsumer:
    """Keeps one polled batch of curated examples as approved answers: one embedding call.

    Storing is idempotent (one row per example id), so a batch re-read after a failure or a
    crash adds nothing twice. A failure backs off and the batch is re-read; once the retry
    budget is spent, the batch's records are parked, as the per-message handler did.
    """

    def __init__(self, service: JudgeService, policy: DeadLetterPolicy) -> None:
        self.service = service
        self.policy = policy

    async def consume(self, records: Sequence[Any]) -> None:
        """Keep a batch; raise (so the batch is re-read) after backoff on a failure."""
        items = await decode_batch(records, _CURATED, self.policy)
        if not items:
            return
        try:
            await self.service.on_curated_many([event for _, event in items])
        except Exception as exc:  # noqa: BLE001  # transient, whatever it is: the records decoded
            await self._retry_or_park([record for record, _ in items], exc)

    async def _retry_or_park(self, records: list[Any], exc: Exception) -> None:
        keys = [(r.topic, r.partition, r.offset) for r in records]
        attempt = max(self.policy.attempts.fail(key) for key in keys)
        if self.policy.retry.exhausted(attempt):
            for record, key in zip(records, keys, strict=True):
                self.policy.attempts.forget(key)
                await self.policy.park(record, exc, attempts=attempt)
            return
        delay = self.policy.retry.delay(attempt)
        log.warning(
            "failed to keep curated examples; re-reading the batch after backoff",
            extra={"error": repr(exc), "delay_s": round(delay, 3)},
        )
        await asyncio.sleep(delay)
        raise exc
