"""Hot-swap: adapters from the registry switch without a restart; bad adapters are refused."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from gateway_support import EventLog, Gateway, wait_until, write_lora

from raftloop_core.events import AdapterPromoted, AdapterRolledBack, event_key
from raftloop_core.messaging import make_broker
from raftloop_core.registry import AdapterCard, AdapterRegistry
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import Topic

pytestmark = pytest.mark.integration
ASK = [{"role": "user", "content": "Reset your password from the account page"}]


def _answer(gateway: Gateway, model: str = "raftloop") -> tuple[str, str, str]:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=model, messages=ASK, max_tokens=10, temperature=0
    )
    done = raw.parse()
    return (
        done.choices[0].message.content,
        raw.headers["x-raftloop-adapter"],
        raw.headers["x-raftloop-interaction-id"],
    )


async def _publish(kafka: KafkaSettings, topic: Topic, event: AdapterPromoted | AdapterRolledBack):
    broker = make_broker(kafka)
    async with broker:
        await broker.start()
        await broker.publish(event, topic=topic, key=event_key(topic, event))


@pytest.fixture(scope="module")
def registry(gateway: Gateway) -> AdapterRegistry:
    return AdapterRegistry(gateway.data_dir / "registry")


@pytest.fixture(scope="module")
def adapter_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("loras")
    return [write_lora(tiny_model_dir, root / f"lora-{i}", seed=i) for i in range(3)]


async def test_promotion_event_switches_the_serving_adapter_and_rollback_restores(
    gateway: Gateway,
    gateway_events: EventLog,
    registry: AdapterRegistry,
    adapter_dirs: list[Path],
    kafka_settings: KafkaSettings,
) -> None:
    before, used, _ = _answer(gateway)
    assert used == "base"
    adapter_id = registry.add(adapter_dirs[0], AdapterCard(base_model="tiny-llama", run_id="r1"))
    assert adapter_id in {m.id for m in gateway.client().models.list().data}

    alias = registry.promote(adapter_id, reason="test")
    await _publish(
        kafka_settings,
        Topic.ADAPTER_PROMOTED,
        AdapterPromoted(adapter_id=adapter_id, base_model="tiny-llama", revision=alias.revision),
    )
    wait_until(lambda: _answer(gateway)[1] == adapter_id, what="the promoted adapter to serve")
    after, used, interaction = _answer(gateway)
    assert used == adapter_id
    assert after != before  # the adapter changes the greedy answer
    await gateway_events.wait_for(
        lambda: gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=interaction)
    )
    [event] = gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=interaction)
    assert event.value["adapter_id"] == adapter_id
    serving = {m.id: m for m in gateway.client().models.list().data}
    assert serving[adapter_id].serving is True

    back = registry.rollback(reason="test rollback")
    assert back.adapter_id is None
    await _publish(
        kafka_settings,
        Topic.ADAPTER_ROLLED_BACK,
        AdapterRolledBack(
            from_adapter_id=adapter_id, to_adapter_id=None, base_model="tiny-llama",
            revision=back.revision,
        ),
    )  # fmt: skip
    wait_until(lambda: _answer(gateway)[1] == "base", what="the rollback")
    assert _answer(gateway)[0] == before


def test_admin_promote_and_rollback_publish_events(
    gateway: Gateway, registry: AdapterRegistry, adapter_dirs: list[Path]
) -> None:
    adapter_id = registry.add(adapter_dirs[1], AdapterCard(base_model="tiny-llama"))
    admin = gateway.auth("admin")
    response = httpx.post(
        f"{gateway.url}/v1/admin/adapters/promote", json={"adapter_id": adapter_id}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["serving"] == adapter_id
    assert _answer(gateway)[1] == adapter_id  # switched at once, no restart
    # A pinned request names the adapter directly; the base model stays reachable by name.
    assert _answer(gateway, model=adapter_id)[1] == adapter_id
    assert _answer(gateway, model="tiny-llama")[1] == "base"
    response = httpx.post(f"{gateway.url}/v1/admin/adapters/rollback", json={}, headers=admin)
    assert response.status_code == 200, response.text
    assert _answer(gateway)[1] == (response.json()["serving"] or "base")


async def test_promotions_reach_the_broker(gateway: Gateway, gateway_events: EventLog) -> None:
    await gateway_events.wait_for(
        lambda: any(r.value.get("run_id") is None for r in gateway_events.where(
            Topic.ADAPTER_PROMOTED, base_model="tiny-llama"
        )),
        what="the admin promotion event",
    )  # fmt: skip


def test_canary_share_routes_conversations_stickily(
    gateway: Gateway,
    registry: AdapterRegistry,
    adapter_dirs: list[Path],
    new_conversation: Callable[[], dict],
) -> None:
    candidate = registry.add(adapter_dirs[2], AdapterCard(base_model="tiny-llama"))
    admin = gateway.auth("admin")
    set_share = httpx.put(
        f"{gateway.url}/v1/admin/canary",
        json={"adapter_id": candidate, "share": 0.5},
        headers=admin,
    )
    assert set_share.status_code == 200, set_share.text
    client = gateway.client()
    routed: dict[str, set[str]] = {}
    for _ in range(12):
        meta = new_conversation()
        for _turn in range(2):
            raw = client.chat.completions.with_raw_response.create(
                model="raftloop", messages=ASK, max_tokens=1, metadata=meta
            )
            routed.setdefault(meta["conversation_id"], set()).add(raw.headers["x-raftloop-adapter"])
    assert all(len(adapters) == 1 for adapters in routed.values())  # sticky
    used = {next(iter(a)) for a in routed.values()}
    assert candidate in used
    assert len(used) == 2  # both the serving adapter and the canary got conversations
    off = httpx.put(f"{gateway.url}/v1/admin/canary", json={"share": 0}, headers=admin)
    assert off.status_code == 200


def test_tampered_and_pickle_adapters_are_refused(
    gateway: Gateway, registry: AdapterRegistry, adapter_dirs: list[Path]
) -> None:
    # A hash mismatch: weights changed after they were registered.
    tampered = registry.add(adapter_dirs[2], AdapterCard(base_model="tiny-llama"))
    weights = registry.adapters / tampered / "adapter_model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original + b" ")
    try:
        admin = gateway.auth("admin")
        response = httpx.post(
            f"{gateway.url}/v1/admin/adapters/promote", json={"adapter_id": tampered}, headers=admin
        )
        assert response.status_code == 409
        assert "hash check" in response.json()["error"]["message"]
        with pytest.raises(openai.APIStatusError, match="hash check") as pinned:
            _answer(gateway, model=tampered)
        assert pinned.value.status_code == 409
    finally:
        weights.write_bytes(original)

    # Pickle weights next to a config: never loaded.
    fake = "b" * 64
    folder = registry.adapters / fake
    folder.mkdir()
    shutil.copy(adapter_dirs[0] / "adapter_config.json", folder)
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    response = httpx.post(
        f"{gateway.url}/v1/admin/adapters/promote",
        json={"adapter_id": fake},
        headers=gateway.auth("admin"),
    )
    assert response.status_code == 409
    assert "adapter_model.bin is not allowed" in response.json()["error"]["message"]
    shutil.rmtree(folder)
