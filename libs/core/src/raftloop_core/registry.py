"""The adapter registry: content-addressed LoRA adapters and atomic per-tenant serving aliases.

Layout under the registry root (a local folder, or the same layout on shared storage)::

    adapters/<sha256 of adapter_model.safetensors>/
        adapter_model.safetensors  adapter_config.json  card.json   (card names its tenant)
    aliases/<tenant>/<alias>.json  {"adapter_id", "revision", "canary_*", "history": [...]}
    aliases/<alias>.json           before per-tenant aliases: still read as tenant "default"

Each tenant has its own alias and canary, and an alias only ever points at its own tenant's
adapters (issue #17): the weights trained on one tenant's data never answer another's users.

Only safetensors from the registry root are ever loaded: ids are checked against their weights'
hash on every `get`, and symlinks, path tricks and pickle files are refused. An alias switch is
an atomic file replace under a lock, so a reader sees the old or the new state, never half.
"""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
CARD = "card.json"
ALLOWED_FILES = frozenset({WEIGHTS, CONFIG, CARD, "README.md"})
_ID = re.compile(r"^[0-9a-f]{64}$")
_ALIAS = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_TENANT = _ALIAS  # the same slug rule as raftloop_core.events.TENANT_PATTERN
DEFAULT_TENANT = "default"
MAX_HEADER_BYTES = 100 * 1024 * 1024


class AdapterRefused(ValueError):
    """An adapter failed a safety check; the message says which and what to do."""


class OtherTenantsAdapter(AdapterRefused):
    """The adapter belongs to another tenant, so this tenant's alias may not point at it."""


class AdapterCard(BaseModel):
    """An adapter's lineage and results."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    adapter_id: str = ""
    base_model: str
    tenant: str = Field(default=DEFAULT_TENANT, description="Tenant whose data trained it.")
    dataset_version: str | None = None
    run_id: str | None = None
    parent: str | None = Field(default=None, description="Adapter that was serving before.")
    hyperparameters: dict[str, float | int | str | bool] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))


class AliasEntry(BaseModel):
    """One switch of an alias."""

    model_config = ConfigDict(frozen=True)

    adapter_id: str | None
    revision: int
    at: AwareDatetime
    action: str
    reason: str | None = None


class AliasState(BaseModel):
    """What a tenant's alias points at now (None = the bare base model), its canary, history."""

    model_config = ConfigDict(frozen=True)

    alias: str
    tenant: str = DEFAULT_TENANT
    adapter_id: str | None = None
    revision: int = 0
    canary_adapter_id: str | None = None
    canary_share: float = 0.0
    history: list[AliasEntry] = Field(default_factory=list)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_safetensors(path: Path) -> None:
    """Refuse anything that is not a well-formed safetensors file (no pickle, ever).

    Raises:
        AdapterRefused: the header is missing, oversize or not a JSON tensor table.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise AdapterRefused(f"{path.name} is not a safetensors file (too short)")
            (size,) = struct.unpack("<Q", raw)
            if size <= 0 or size > MAX_HEADER_BYTES:
                raise AdapterRefused(f"{path.name} is not a safetensors file (bad header size)")
            header = json.loads(fh.read(size))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterRefused(f"{path.name} is not a safetensors file ({exc})") from exc
    if not isinstance(header, dict) or not all(
        isinstance(v, dict) and "dtype" in v and "data_offsets" in v
        for k, v in header.items()
        if k != "__metadata__"
    ):
        raise AdapterRefused(f"{path.name} has no valid safetensors tensor table")


def _check_folder(folder: Path) -> None:
    if folder.is_symlink() or not folder.is_dir():
        raise AdapterRefused(f"{folder} is not a plain folder; adapters must be real folders")
    for item in folder.iterdir():
        if item.is_symlink():
            raise AdapterRefused(f"{item.name} is a symlink; adapters must not contain links")
        if item.name not in ALLOWED_FILES:
            raise AdapterRefused(
                f"{item.name} is not allowed in an adapter (only {', '.join(sorted(ALLOWED_FILES))}"
                "); pickle weights such as .bin or .pt are never loaded"
            )
    for required in (WEIGHTS, CONFIG):
        if not (folder / required).is_file():
            raise AdapterRefused(f"{folder} has no {required}; save the adapter with safetensors")
    try:
        json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise AdapterRefused(f"{CONFIG} is not valid JSON ({exc})") from exc
    check_safetensors(folder / WEIGHTS)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class AdapterRegistry:
    """Content-addressed adapters and their serving aliases under one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.adapters = self.root / "adapters"
        self.aliases = self.root / "aliases"
        self.adapters.mkdir(parents=True, exist_ok=True)
        self.aliases.mkdir(parents=True, exist_ok=True)

    def add(self, folder: Path, card: AdapterCard) -> str:
        """Copy a trained adapter folder in; return its id (sha256 of its weights).

        Adding the same weights twice is a no-op that returns the same id.
        """
        _check_folder(folder)
        adapter_id = sha256_file(folder / WEIGHTS)
        target = self.adapters / adapter_id
        if target.exists():
            if self.card(adapter_id).tenant != card.tenant:
                raise AdapterRefused(
                    f"adapter {adapter_id[:12]} is already registered for another tenant; "
                    "identical weights cannot belong to two tenants: retrain with another seed"
                )
            return adapter_id
        staging = self.adapters / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for name in (WEIGHTS, CONFIG):
                shutil.copyfile(folder / name, staging / name)
            stamped = card.model_copy(update={"adapter_id": adapter_id})
            (staging / CARD).write_text(stamped.model_dump_json(indent=2))
            if sha256_file(staging / WEIGHTS) != adapter_id:
                raise AdapterRefused("the weights changed while they were copied; add again")
            os.rename(staging, target)
        except FileExistsError:
            pass  # a concurrent add of the same weights won
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return adapter_id

    def get(self, adapter_id: str) -> Path:
        """The verified folder of an adapter, ready to load with peft.

        Raises:
            AdapterRefused: unknown or malformed id, tampered weights, links or pickle files.
        """
        if not _ID.match(adapter_id):
            raise AdapterRefused(
                f"{adapter_id[:80]!r} is not an adapter id (64 hex characters); list them with "
                "`raftloop adapters list`"
            )
        folder = self.adapters / adapter_id
        if not folder.exists():
            raise AdapterRefused(f"adapter {adapter_id[:12]} is not in the registry {self.root}")
        _check_folder(folder)
        if folder.resolve().parent != self.adapters:
            raise AdapterRefused(f"adapter {adapter_id[:12]} resolves outside the registry")
        actual = sha256_file(folder / WEIGHTS)
        if actual != adapter_id:
            raise AdapterRefused(
                f"adapter {adapter_id[:12]} failed its hash check (weights hash {actual[:12]}); "
                "the file was changed or corrupted: re-add it from the training run"
            )
        return folder

    def card(self, adapter_id: str) -> AdapterCard:
        """The card of a registered adapter."""
        return AdapterCard.model_validate_json((self.get(adapter_id) / CARD).read_text())

    def list(self, tenant: str | None = None) -> list[AdapterCard]:
        """Registered adapters' cards (only `tenant`'s when given), oldest first.

        Tampered adapters are skipped.
        """
        cards = []
        for folder in self.adapters.iterdir():
            if folder.name.startswith(".") or not _ID.match(folder.name):
                continue
            try:
                card = self.card(folder.name)
            except (AdapterRefused, OSError, ValueError):
                continue
            if tenant is None or card.tenant == tenant:
                cards.append(card)
        return sorted(cards, key=lambda c: c.created_at)

    def owned(self, adapter_id: str, tenant: str) -> AdapterCard:
        """The card of a verified adapter of `tenant`.

        Raises:
            OtherTenantsAdapter: it belongs to another tenant.
            AdapterRefused: it is unknown or failed a check.
        """
        card = self.card(adapter_id)
        if card.tenant != tenant:
            raise OtherTenantsAdapter(
                f"adapter {adapter_id[:12]} is not among tenant {tenant!r}'s adapters; list "
                f"them with `raftloop adapters list --tenant {tenant}`"
            )
        return card

    def tenants(self) -> builtins.list[str]:
        """Tenants that have an alias file (the legacy layout counts as "default")."""
        found = {p.name for p in self.aliases.iterdir() if p.is_dir() and _TENANT.match(p.name)}
        if any(p.suffix == ".json" for p in self.aliases.iterdir() if p.is_file()):
            found.add(DEFAULT_TENANT)
        return sorted(found)

    def _alias_path(self, alias: str, tenant: str) -> Path:
        if not _ALIAS.match(alias):
            raise ValueError(f"{alias!r} is not a valid alias name (lowercase letters, digits, -_)")
        if not _TENANT.match(tenant):
            raise ValueError(f"{tenant!r} is not a valid tenant (lowercase letters, digits, -_)")
        return self.aliases / tenant / f"{alias}.json"

    def serving(self, alias: str = "serving", tenant: str = DEFAULT_TENANT) -> AliasState:
        """What `tenant`'s `alias` points at now (the base model while it has never switched)."""
        path = self._alias_path(alias, tenant)
        if not path.exists() and tenant == DEFAULT_TENANT:
            # Installs from before per-tenant aliases keep serving what they served.
            path = self.aliases / f"{alias}.json"
        if not path.exists():
            return AliasState(alias=alias, tenant=tenant)
        state = AliasState.model_validate_json(path.read_text())
        return state.model_copy(update={"tenant": tenant})

    @contextmanager
    def _lock(self, alias: str, tenant: str) -> Iterator[None]:
        folder = self._alias_path(alias, tenant).parent
        folder.mkdir(exist_ok=True)
        with open(folder / f".{alias}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _switch(
        self,
        state: AliasState,
        adapter_id: str | None,
        action: str,
        reason: str | None,
        **canary: str | float | None,
    ) -> AliasState:
        entry = AliasEntry(
            adapter_id=adapter_id,
            revision=state.revision + 1,
            at=datetime.now(UTC),
            action=action,
            reason=reason,
        )
        new = state.model_copy(
            update={
                "adapter_id": adapter_id,
                "revision": entry.revision,
                "history": [*state.history, entry],
                **canary,
            }
        )
        _write_atomic(self._alias_path(state.alias, state.tenant), new.model_dump_json(indent=2))
        return new

    def promote(
        self,
        adapter_id: str,
        alias: str = "serving",
        reason: str | None = None,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> AliasState:
        """Point `tenant`'s `alias` at a verified adapter of that tenant.

        Raises:
            OtherTenantsAdapter: the adapter was trained for another tenant.
            AdapterRefused: unknown adapter or a failed check.
        """
        self.owned(adapter_id, tenant)
        with self._lock(alias, tenant):
            return self._switch(self.serving(alias, tenant), adapter_id, "promoted", reason)

    def rollback(
        self, alias: str = "serving", reason: str | None = None, *, tenant: str = DEFAULT_TENANT
    ) -> AliasState:
        """Point `tenant`'s `alias` back at what it served before (maybe the base model).

        Raises:
            ValueError: the alias has never been switched, so there is nothing to go back to.
        """
        with self._lock(alias, tenant):
            state = self.serving(alias, tenant)
            if not state.history:
                raise ValueError(
                    f"tenant {tenant!r}'s alias {alias!r} was never promoted; nothing to roll back"
                )
            previous = _previous_target(state)
            if previous is not None:
                self.owned(previous, tenant)
            return self._switch(state, previous, "rolled_back", reason)

    def set_canary(
        self,
        adapter_id: str | None,
        share: float,
        alias: str = "serving",
        *,
        tenant: str = DEFAULT_TENANT,
        reason: str | None = None,
    ) -> AliasState:
        """Send `share` of `tenant`'s conversations (sticky) to `adapter_id`; None or 0 = off.

        Raises:
            OtherTenantsAdapter: the adapter was trained for another tenant.
            ValueError: the share is outside [0, 1].
        """
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"canary share {share} is outside [0, 1]")
        if adapter_id is not None and share > 0:
            self.owned(adapter_id, tenant)
        else:
            adapter_id, share = None, 0.0
        with self._lock(alias, tenant):
            state = self.serving(alias, tenant)
            if (state.canary_adapter_id, state.canary_share) == (adapter_id, share):
                return state  # idempotent: the same setting again switches nothing
            return self._switch(
                state,
                state.adapter_id,
                "canary",
                reason,
                canary_adapter_id=adapter_id,
                canary_share=share,
            )


def _previous_target(state: AliasState) -> str | None:
    """Walk the history back past rollbacks to the adapter served before the current one."""
    promotions: list[str | None] = [None]
    for entry in state.history:
        if entry.action == "promoted":
            promotions.append(entry.adapter_id)
        elif entry.action == "rolled_back" and len(promotions) > 1:
            promotions.pop()
    if len(promotions) > 1:
        promotions.pop()
    return promotions[-1]
