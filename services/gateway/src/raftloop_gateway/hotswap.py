"""Which adapter serves: the registry's alias file is the truth; events and polling refresh it.

An adapter becomes the serving one only after it passed the registry checks (safetensors,
sha256) and the backend loaded it, so a bad promotion never takes down serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from raftloop_core.registry import AdapterCard, AdapterRefused, AdapterRegistry
from raftloop_gateway.domain import AdapterUnavailable, Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Canary:
    """A candidate adapter that serves a fixed share of conversations."""

    adapter_id: str | None = None
    share: float = 0.0


class ServingState:
    """The serving adapter, the canary and the registered adapters, kept current."""

    def __init__(
        self,
        registry: AdapterRegistry,
        backend: Backend,
        *,
        alias: str,
        canary_file: Path,
        canary: Canary,
        poll_s: float,
    ) -> None:
        self.registry = registry
        self.backend = backend
        self.alias = alias
        self.serving: str | None = None
        self.revision = 0
        self.last_error: str | None = None
        self.canary_file = canary_file
        self.canary = self._load_canary(canary)
        self.poll_s = poll_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def _load_canary(self, default: Canary) -> Canary:
        if self.canary_file.exists():
            raw = json.loads(self.canary_file.read_text())
            return Canary(raw.get("adapter_id"), float(raw.get("share", 0.0)))
        return default

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

    async def refresh(self, min_revision: int = 0) -> None:
        """Re-read the alias; switch when its revision is newer and the adapter checks out."""
        async with self._lock:
            state = await asyncio.to_thread(self.registry.serving, self.alias)
            if state.revision <= self.revision or state.revision < min_revision:
                return
            try:
                if state.adapter_id is not None:
                    await self.verify(state.adapter_id)
            except (AdapterUnavailable, OSError, ValueError) as exc:
                self.last_error = f"revision {state.revision} refused: {exc}"
                log.error("adapter switch refused", extra={"error": self.last_error})
                self.revision = state.revision  # do not retry a refused revision forever
                return
            previous, self.serving, self.revision = self.serving, state.adapter_id, state.revision
            self.last_error = None
            log.info(
                "serving adapter switched",
                extra={"from": previous, "to": self.serving, "revision": self.revision},
            )

    def set_canary(self, canary: Canary) -> None:
        """Persist a new canary setting."""
        self.canary_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.canary_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"adapter_id": canary.adapter_id, "share": canary.share}))
        tmp.replace(self.canary_file)
        self.canary = canary

    async def cards(self) -> list[AdapterCard]:
        """Every registered adapter."""
        return await asyncio.to_thread(self.registry.list)

    async def known(self, model: str) -> bool:
        """Whether `model` is a registered adapter id (verified on use, not here)."""
        folder = self.registry.adapters / model
        return len(model) == 64 and await asyncio.to_thread(folder.is_dir)

    def start(self) -> None:
        """Poll the alias file, so a missed event still switches within `poll_s`."""
        self._task = asyncio.create_task(self._poll(), name="alias-poll")

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            try:
                if self.backend.ready:
                    await self.refresh()
            except Exception:
                log.exception("alias refresh failed")
            await asyncio.sleep(self.poll_s)
