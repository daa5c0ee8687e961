"""Alias switches in the registry, each recorded as an event that drives the gateway.

The one owner of alias switching (issue #17): the trainer's gate, its admin routes and the
operator's `raftloop adapters` commands all switch through here, each only the tenant's own
alias; the gateway only follows the registry and these events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from raftloop_core.events import AdapterPromoted, AdapterRejected, AdapterRolledBack
from raftloop_core.registry import AdapterRegistry, AliasState
from raftloop_core.topics import Topic
from raftloop_trainer.adapters import EventSink


async def promote(
    registry: AdapterRegistry,
    sink: EventSink,
    adapter_id: str,
    *,
    alias: str,
    base_model: str,
    tenant: str = "default",
    run_id: str | None = None,
    dataset_version: str | None = None,
    metrics: Mapping[str, float] | None = None,
    reason: str | None = None,
) -> AliasState:
    """Point `alias` at `adapter_id` (atomically) and publish AdapterPromoted."""
    before = await asyncio.to_thread(registry.serving, alias, tenant)
    state = await asyncio.to_thread(registry.promote, adapter_id, alias, reason, tenant=tenant)
    await sink.publish(
        Topic.ADAPTER_PROMOTED,
        AdapterPromoted(
            tenant=tenant,
            alias=alias,
            adapter_id=adapter_id,
            previous_adapter_id=before.adapter_id,
            base_model=base_model,
            run_id=run_id,
            dataset_version=dataset_version,
            revision=state.revision,
            metrics=dict(metrics or {}),
        ),
    )
    return state


async def rollback(
    registry: AdapterRegistry,
    sink: EventSink,
    *,
    alias: str,
    base_model: str,
    tenant: str = "default",
    reason: str | None = None,
) -> AliasState:
    """Switch `alias` back to what it served before and publish AdapterRolledBack.

    Raises:
        ValueError: the alias was never promoted.
    """
    before = await asyncio.to_thread(registry.serving, alias, tenant)
    state = await asyncio.to_thread(registry.rollback, alias, reason, tenant=tenant)
    await sink.publish(
        Topic.ADAPTER_ROLLED_BACK,
        AdapterRolledBack(
            tenant=tenant,
            alias=alias,
            from_adapter_id=before.adapter_id,
            to_adapter_id=state.adapter_id,
            base_model=base_model,
            revision=state.revision,
            reason=reason,
        ),
    )
    return state


async def set_canary(
    registry: AdapterRegistry,
    adapter_id: str | None,
    share: float,
    *,
    alias: str,
    tenant: str = "default",
    reason: str | None = None,
) -> AliasState:
    """Set the tenant's canary; gateways pick it up when they next poll the alias.

    Raises:
        OtherTenantsAdapter: the adapter belongs to another tenant.
        AdapterRefused: unknown adapter or a failed check.
    """
    return await asyncio.to_thread(
        registry.set_canary, adapter_id, share, alias, tenant=tenant, reason=reason
    )


async def reject(
    sink: EventSink,
    adapter_id: str,
    *,
    alias: str,
    base_model: str,
    reasons: list[str],
    tenant: str = "default",
    run_id: str | None = None,
    dataset_version: str | None = None,
    metrics: Mapping[str, float] | None = None,
) -> None:
    """Publish AdapterRejected; the alias is left as it is."""
    await sink.publish(
        Topic.ADAPTER_REJECTED,
        AdapterRejected(
            tenant=tenant,
            alias=alias,
            adapter_id=adapter_id,
            base_model=base_model,
            run_id=run_id,
            dataset_version=dataset_version,
            reasons=reasons,
            metrics=dict(metrics or {}),
        ),
    )
