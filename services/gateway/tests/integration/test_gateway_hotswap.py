"""Hot-swap: registry switches serve without a restart; bad adapters are refused.

The trainer owns switching (issue #17): these tests switch through the registry and publish
the trainer's event; the gateway's own admin routes switch nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import openai
import pytest
from gateway_support import EventLog, Gateway, announce, wait_until, write_lora
from openai.types.chat import ChatCompletionMessageParam

from raftloop_core.events import AdapterPromoted, AdapterRolledBack, event_key
from raftloop_core.messaging import make_broker
from raftloop_core.registry import AdapterCard, AdapterRefused, AdapterRegistry
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import Topic

pytestmark = pytest.mark.integration
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Reset your password from the account page"}
]


def _answer(gateway: Gateway, model: str = "raftloop") -> tuple[str | None, str, str]:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model=model, messages=ASK, max_tokens=10, temperature=0
    )
    done = raw.parse()
    return (
        done.choices[0].message.content,
        raw.headers["x-raftloop-adapter"],
        raw.headers["x-raftloop-interaction-id"],
    )


async def _publish(
    kafka: KafkaSettings, topic: Topic, event: AdapterPromoted | AdapterRolledBack
) -> None:
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
    assert getattr(serving[adapter_id], "serving", None) is True

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


async def test_a_registry_switch_serves_at_once_and_pinning_stays_possible(
    gateway: Gateway,
    registry: AdapterRegistry,
    adapter_dirs: list[Path],
    kafka_settings: KafkaSettings,
) -> None:
    adapter_id = registry.add(adapter_dirs[1], AdapterCard(base_model="tiny-llama"))
    before = registry.serving().adapter_id
    await announce(kafka_settings, registry.promote(adapter_id), before=before)
    wait_until(lambda: _answer(gateway)[1] == adapter_id, what="the promoted adapter to serve")
    # A pinned request names the adapter directly; the base model stays reachable by name.
    assert _answer(gateway, model=adapter_id)[1] == adapter_id
    assert _answer(gateway, model="tiny-llama")[1] == "base"
    view = httpx.get(f"{gateway.url}/v1/admin/adapters", headers=gateway.auth("admin")).json()
    assert (view["tenant"], view["serving"]) == ("default", adapter_id)
    back = registry.rollback()
    await announce(kafka_settings, back, before=adapter_id)
    wait_until(lambda: _answer(gateway)[1] == (back.adapter_id or "base"), what="the rollback")


@pytest.mark.parametrize(
    ("method", "path", "body", "owner"),
    [
        ("POST", "/v1/admin/adapters/promote", {"adapter_id": "c" * 64}, "/promote"),
        ("POST", "/v1/admin/adapters/rollback", {}, "/v1/adapters/rollback"),
        ("PUT", "/v1/admin/canary", {"share": 0.5}, "/v1/adapters/canary"),
    ],
)
def test_the_gateway_switches_nothing_and_points_at_the_trainer(
    gateway: Gateway,
    registry: AdapterRegistry,
    method: str,
    path: str,
    body: dict[str, object],
    owner: str,
) -> None:
    before = registry.serving()
    response = httpx.request(method, gateway.url + path, json=body, headers=gateway.auth("admin"))
    assert response.status_code == 410, response.text
    error = response.json()["error"]
    assert error["code"] == "moved_to_trainer"
    assert owner in error["message"]
    assert "trainer" in error["message"]
    assert registry.serving() == before


def test_tampered_and_pickle_adapters_are_refused(
    gateway: Gateway, registry: AdapterRegistry, adapter_dirs: list[Path]
) -> None:
    # A hash mismatch: weights changed after they were registered.
    tampered = registry.add(adapter_dirs[2], AdapterCard(base_model="tiny-llama"))
    weights = registry.adapters / tampered / "adapter_model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original + b" ")
    try:
        with pytest.raises(AdapterRefused, match="hash check"):
            registry.promote(tampered)
        with pytest.raises(openai.APIStatusError, match="hash check") as pinned:
            _answer(gateway, model=tampered)
        assert pinned.value.status_code == 409
    finally:
        weights.write_bytes(original)

    # Pickle weights next to a config: never loaded, and not even a model to name.
    fake = "b" * 64
    folder = registry.adapters / fake
    folder.mkdir()
    shutil.copy(adapter_dirs[0] / "adapter_config.json", folder)
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    try:
        with pytest.raises(AdapterRefused, match=r"adapter_model\.bin is not allowed"):
            registry.promote(fake)
        with pytest.raises(openai.NotFoundError):
            _answer(gateway, model=fake)
    finally:
        shutil.rmtree(folder)
