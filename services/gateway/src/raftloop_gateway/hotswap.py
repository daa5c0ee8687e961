"""Which adapter serves each tenant: the registry's per-tenant alias files are the truth.

Each tenant's serving adapter, revision and canary are read lazily on its first request, then
refreshed by the trainer's adapter events (they carry the tenant) and by polling the tenants
this gateway has seen. The trainer owns every switch (issue #17); this module only follows.

An adapter becomes a tenant's serving one only after it passed the registry checks
(safetensors, sha256, the card names that tenant) and the backend loaded it, so a bad
promotion never takes down serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from raftloop_core.registry import (
    CARD,
    DEFAULT_TENANT,
    AdapterCard,
    AdapterRefused,
    AdapterRegistry,
    AliasState,
)
from raftloop_gateway.domain import AdapterUnavailable, Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Canary:
    """A candidate adapter that serves a fixed share of a tenant's conversations."""

    adapter_id: str | None = None
    share: float = 0.0


@dataclass
class TenantServing:
    """What serves one tenant now."""

    serving: str | None = None
    revision: int = 0
    canary: Canary = field(default_factory=Canary)
    last_error: str | None = None


class ServingState:
    """Each seen tenant's serving adapter and canary, kept current."""

    def __init__(
        self, registry: AdapterRegistry, backend: Backend, *, alias: str, poll_s: float
    ) -> None:
        self.registry = registry
        self.backend = backend
        self.alias = alias
        self.poll_s = poll_s
        # The default tenant is always watched, so single-tenant installs load at start.
        self.tenants: dict[str, TenantServing] = {DEFAULT_TENANT: TenantServing()}
        self._loaded: set[str] = set()
        self._owners: dict[str, str] = {}  # adapter id -> tenant (cards never change)
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None

    async def of(self, tenant: str) -> TenantServing:
        """The tenant's serving state, read from the registry on its first request."""
        if tenant not in self._loaded:
            await self.refresh(tenant)
        return self.tenants[tenant]

    async def verify(self, adapter_id: str) -> Path:
        """The verified folder of an adapter, loaded into the backend.

        Raises:
            AdapterUnavailable: the registry refused it (unknown, not safetensors, bad hash).
        """
        try:
            folder = await asyncio.to_thread(self.registry.get, adapter_id)
        except AdapterRefused as exc:
            raise AdapterUnavailable(str(exc), param="adapter_id") from exc
        await self.backend.prepare(adapter_id)
        return folder

    async def refresh(self, tenant: str = DEFAULT_TENANT, min_revision: int = 0) -> None:
        """Re-read the tenant's alias; switch when its revision is newer and it checks out."""
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            current = self.tenants.setdefault(tenant, TenantServing())
            self._loaded.add(tenant)
            state = await asyncio.to_thread(self.registry.serving, self.alias, tenant)
            if state.revision <= current.revision or state.revision < min_revision:
                return
            try:
                await self._check(tenant, state)
            except (AdapterUnavailable, OSError, ValueError) as exc:
                current.last_error = f"revision {state.revision} refused: {exc}"
                log.error(
                    "adapter switch refused", extra={"tenant": tenant, "error": current.last_error}
                )
                current.revision = state.revision  # do not retry a refused revision forever
                return
            previous = current.serving
            self.tenants[tenant] = TenantServing(
                serving=state.adapter_id,
                revision=state.revision,
                canary=Canary(state.canary_adapter_id, state.canary_share),
            )
            log.info(
                "serving adapter switched",
                extra={
                    "tenant": tenant,
                    "from": previous,
                    "to": state.adapter_id,
                    "revision": state.revision,
                },
            )

    async def _check(self, tenant: str, state: AliasState) -> None:
        for adapter_id in (state.adapter_id, state.canary_adapter_id):
            if adapter_id is None:
                continue
            if await self.owner(adapter_id) != tenant:
                raise AdapterUnavailable(f"adapter {adapter_id[:12]} is not tenant {tenant!r}'s")
            await self.verify(adapter_id)

    async def owner(self, adapter_id: str) -> str | None:
        """The tenant named by a registered adapter's card (None: no such adapter).

        The card is read without the hash check; `verify` checks the weights before use.
        """
        if adapter_id in self._owners:
            return self._owners[adapter_id]
        path = self.registry.adapters / adapter_id / CARD
        if len(adapter_id) != 64 or not await asyncio.to_thread(path.is_file):
            return None
        try:
            card = AdapterCard.model_validate_json(await asyncio.to_thread(path.read_text))
        except (OSError, ValueError):
            return None
        self._owners[adapter_id] = card.tenant
        return card.tenant

    async def cards(self, tenant: str) -> list[AdapterCard]:
        """The tenant's registered adapters."""
        return await asyncio.to_thread(self.registry.list, tenant)

    async def known(self, model: str, tenant: str) -> bool:
        """Whether `model` is one of the tenant's adapters (another tenant's is unknown)."""
        return await self.owner(model) == tenant

    def start(self) -> None:
        """Poll the seen tenants' aliases, so a missed event still switches within `poll_s`."""
        self._task = asyncio.create_task(self._poll(), name="alias-poll")

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            for tenant in list(self.tenants):
                try:
                    if self.backend.ready:
                        await self.refresh(tenant)
                except Exception:
                    log.exception("alias refresh failed", extra={"tenant": tenant})
            await asyncio.sleep(self.poll_s)
