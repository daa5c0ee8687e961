"""ServingState: each tenant's alias and canary, read lazily, never another tenant's adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from raftloop_core.registry import AdapterCard, AdapterRegistry, AliasState
from raftloop_gateway.hotswap import ServingState


class FakeBackend:
    base_model = "tiny"
    ready = True

    def __init__(self) -> None:
        self.prepared: list[str] = []

    async def prepare(self, adapter_id: str) -> None:
        self.prepared.append(adapter_id)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def _add(registry: AdapterRegistry, folder: Path, tenant: str, seed: int) -> str:
    folder.mkdir(parents=True)
    weights = {"lora_A": np.random.default_rng(seed).standard_normal((4, 8)).astype(np.float32)}
    save_file(weights, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    return registry.add(folder, AdapterCard(base_model="tiny", tenant=tenant))


@pytest.fixture
def registry(tmp_path: Path) -> AdapterRegistry:
    return AdapterRegistry(tmp_path / "registry")


async def test_each_tenant_gets_its_alias_and_canary(
    registry: AdapterRegistry, tmp_path: Path
) -> None:
    a1 = _add(registry, tmp_path / "a1", "acme", 1)
    a2 = _add(registry, tmp_path / "a2", "acme", 2)
    g1 = _add(registry, tmp_path / "g1", "globex", 3)
    registry.promote(a1, tenant="acme")
    registry.set_canary(a2, 0.3, tenant="acme")
    backend = FakeBackend()
    state = ServingState(registry, backend, alias="serving", poll_s=60)

    acme = await state.of("acme")
    assert (acme.serving, acme.canary.adapter_id, acme.canary.share) == (a1, a2, 0.3)
    assert (await state.of("globex")).serving is None
    assert set(backend.prepared) == {a1, a2}
    assert await state.known(g1, "globex")
    assert not await state.known(a1, "globex")
    assert not await state.known("0" * 64, "globex")
    assert [c.adapter_id for c in await state.cards("globex")] == [g1]

    registry.promote(g1, tenant="globex")
    await state.refresh("globex")
    assert (await state.of("globex")).serving == g1
    assert (await state.of("acme")).serving == a1


async def test_an_alias_file_naming_another_tenants_adapter_is_refused(
    registry: AdapterRegistry, tmp_path: Path
) -> None:
    a1 = _add(registry, tmp_path / "a1", "acme", 1)
    # What a hostile writer to shared storage could do: bypass the registry's own check.
    path = registry.aliases / "globex" / "serving.json"
    path.parent.mkdir()
    path.write_text(AliasState(alias="serving", adapter_id=a1, revision=5).model_dump_json())
    state = ServingState(registry, FakeBackend(), alias="serving", poll_s=60)

    globex = await state.of("globex")
    assert globex.serving is None
    assert globex.last_error is not None
    assert "not tenant 'globex'" in globex.last_error
