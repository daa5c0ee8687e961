import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from raftloop_core.registry import (
    AdapterCard,
    AdapterRefused,
    AdapterRegistry,
    AliasState,
    OtherTenantsAdapter,
)


def make_adapter(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    save_file(
        {"lora_A": rng.standard_normal((4, 8)).astype(np.float32)},
        str(folder / "adapter_model.safetensors"),
    )
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> AdapterRegistry:
    return AdapterRegistry(tmp_path / "registry")


def card() -> AdapterCard:
    return AdapterCard(base_model="tiny", dataset_version="d1", metrics={"token_f1": 0.5})


def test_add_is_content_addressed_and_idempotent(registry: AdapterRegistry, tmp_path: Path) -> None:
    src = make_adapter(tmp_path / "a", seed=1)
    first = registry.add(src, card())
    assert registry.add(src, card()) == first
    assert len(first) == 64
    assert registry.get(first).name == first
    assert registry.card(first).adapter_id == first
    assert [c.adapter_id for c in registry.list()] == [first]


def test_tampered_weights_fail_the_hash_check(registry: AdapterRegistry, tmp_path: Path) -> None:
    adapter_id = registry.add(make_adapter(tmp_path / "a", seed=1), card())
    weights = registry.adapters / adapter_id / "adapter_model.safetensors"
    other = make_adapter(tmp_path / "b", seed=2) / "adapter_model.safetensors"
    weights.write_bytes(other.read_bytes())
    with pytest.raises(AdapterRefused, match="failed its hash check"):
        registry.get(adapter_id)
    assert registry.list() == []


@pytest.mark.parametrize("bad_id", ["../../etc/passwd", "A" * 64, "abc", "0" * 63 + "/"])
def test_ids_that_are_not_hashes_are_refused(registry: AdapterRegistry, bad_id: str) -> None:
    with pytest.raises(AdapterRefused, match="not an adapter id"):
        registry.get(bad_id)


def test_pickle_files_symlinks_and_fake_safetensors_are_refused(
    registry: AdapterRegistry, tmp_path: Path
) -> None:
    pickled = make_adapter(tmp_path / "p", seed=1)
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(AdapterRefused, match=r"adapter_model.bin is not allowed"):
        registry.add(pickled, card())

    linked = make_adapter(tmp_path / "l", seed=1)
    os.symlink("/etc/passwd", linked / "README.md")
    with pytest.raises(AdapterRefused, match="symlink"):
        registry.add(linked, card())

    fake = make_adapter(tmp_path / "f", seed=1)
    (fake / "adapter_model.safetensors").write_bytes(b"\x80\x04\x95 not safetensors at all")
    with pytest.raises(AdapterRefused, match="not a safetensors file"):
        registry.add(fake, card())


def test_a_symlinked_adapter_folder_in_the_registry_is_refused(
    registry: AdapterRegistry, tmp_path: Path
) -> None:
    adapter_id = registry.add(make_adapter(tmp_path / "a", seed=1), card())
    outside = tmp_path / "outside"
    (registry.adapters / adapter_id).rename(outside)
    os.symlink(outside, registry.adapters / adapter_id)
    with pytest.raises(AdapterRefused, match="not a plain folder"):
        registry.get(adapter_id)


def test_promote_and_rollback_walk_the_history(registry: AdapterRegistry, tmp_path: Path) -> None:
    a = registry.add(make_adapter(tmp_path / "a", seed=1), card())
    b = registry.add(make_adapter(tmp_path / "b", seed=2), card())
    assert registry.serving().adapter_id is None
    assert registry.promote(a).revision == 1
    assert registry.promote(b).adapter_id == b
    back = registry.rollback(reason="regression")
    assert (back.adapter_id, back.revision) == (a, 3)
    assert registry.rollback().adapter_id is None  # back to the bare base model
    state = registry.serving()
    assert state.revision == 4
    assert [e.action for e in state.history] == [
        "promoted",
        "promoted",
        "rolled_back",
        "rolled_back",
    ]


def test_rollback_without_history_is_a_clear_error(registry: AdapterRegistry) -> None:
    with pytest.raises(ValueError, match="never promoted"):
        registry.rollback()


def test_promoting_an_unknown_adapter_is_refused(registry: AdapterRegistry) -> None:
    with pytest.raises(AdapterRefused, match="not in the registry"):
        registry.promote("0" * 64)
    assert registry.serving().revision == 0


def tenant_card(tenant: str) -> AdapterCard:
    return AdapterCard(base_model="tiny", tenant=tenant)


def test_each_tenant_has_its_own_alias(registry: AdapterRegistry, tmp_path: Path) -> None:
    acme = registry.add(make_adapter(tmp_path / "a", seed=1), tenant_card("acme"))
    globex = registry.add(make_adapter(tmp_path / "g", seed=2), tenant_card("globex"))
    assert registry.card(acme).tenant == "acme"
    registry.promote(acme, tenant="acme")
    assert registry.serving(tenant="acme").adapter_id == acme
    assert registry.serving(tenant="globex").adapter_id is None
    assert registry.serving().adapter_id is None  # the default tenant is untouched
    registry.promote(globex, tenant="globex")
    registry.rollback(tenant="acme")
    assert registry.serving(tenant="acme").adapter_id is None
    assert registry.serving(tenant="globex").adapter_id == globex
    assert registry.serving(tenant="globex").revision == 1
    assert [c.adapter_id for c in registry.list("acme")] == [acme]
    assert [c.adapter_id for c in registry.list("globex")] == [globex]
    assert set(registry.tenants()) == {"acme", "globex"}


def test_promoting_another_tenants_adapter_is_refused(
    registry: AdapterRegistry, tmp_path: Path
) -> None:
    acme = registry.add(make_adapter(tmp_path / "a", seed=1), tenant_card("acme"))
    with pytest.raises(OtherTenantsAdapter, match="not among tenant 'globex'"):
        registry.promote(acme, tenant="globex")
    with pytest.raises(OtherTenantsAdapter):
        registry.promote(acme)  # the default tenant is a tenant like any other
    with pytest.raises(OtherTenantsAdapter):
        registry.set_canary(acme, 0.5, tenant="globex")
    assert registry.serving(tenant="globex").revision == 0


def test_rollback_of_a_tenant_without_history_names_the_tenant(registry: AdapterRegistry) -> None:
    with pytest.raises(ValueError, match="tenant 'globex'"):
        registry.rollback(tenant="globex")


def test_canary_is_per_tenant_and_bumps_the_revision(
    registry: AdapterRegistry, tmp_path: Path
) -> None:
    a1 = registry.add(make_adapter(tmp_path / "a1", seed=1), tenant_card("acme"))
    a2 = registry.add(make_adapter(tmp_path / "a2", seed=2), tenant_card("acme"))
    registry.promote(a1, tenant="acme")
    state = registry.set_canary(a2, 0.25, tenant="acme")
    assert (state.adapter_id, state.canary_adapter_id, state.canary_share) == (a1, a2, 0.25)
    assert state.revision == 2
    assert registry.serving(tenant="globex").canary_adapter_id is None
    # A canary entry is not a promotion: rollback still goes back to the base model.
    assert registry.rollback(tenant="acme").adapter_id is None
    off = registry.set_canary(None, 0.9, tenant="acme")
    assert (off.canary_adapter_id, off.canary_share) == (None, 0.0)
    # Setting what is already set switches nothing (a PUT repeated, or a fuzzer's null body).
    assert registry.set_canary(None, 0.0, tenant="acme") == off
    assert registry.set_canary(None, 0.0, tenant="globex").revision == 0


def test_a_legacy_alias_file_is_the_default_tenants(
    registry: AdapterRegistry, tmp_path: Path
) -> None:
    a = registry.add(make_adapter(tmp_path / "a", seed=1), card())
    b = registry.add(make_adapter(tmp_path / "b", seed=2), card())
    legacy = AliasState(alias="serving", adapter_id=a, revision=3)
    (registry.aliases / "serving.json").write_text(legacy.model_dump_json())
    assert registry.serving().adapter_id == a
    assert registry.serving(tenant="acme").adapter_id is None
    assert registry.promote(b).revision == 4  # continues the legacy history
    assert (registry.aliases / "default" / "serving.json").exists()
    assert registry.serving().adapter_id == b


def test_the_same_weights_cannot_belong_to_two_tenants(
    registry: AdapterRegistry, tmp_path: Path
) -> None:
    src = make_adapter(tmp_path / "a", seed=1)
    registry.add(src, tenant_card("acme"))
    with pytest.raises(AdapterRefused, match="another tenant"):
        registry.add(src, tenant_card("globex"))
