"""Per-tenant serving (issue #17): each tenant's chats are answered by its own alias only.

A real gateway process on the tiny model, keys of two tenants (acme, globex) and of a third
without an alias (initech), the real openai client. Aliases switch as the trainer switches them:
the registry, then the event (it names the tenant).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from gateway_support import Gateway, announce, start_gateway, wait_until, write_lora
from openai.types.chat import ChatCompletionMessageParam

from raftloop_core.credentials import hash_key
from raftloop_core.registry import AdapterCard, AdapterRegistry
from raftloop_core.settings import KafkaSettings

pytestmark = pytest.mark.integration
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Reset your password from the account page"}
]
TENANTS = ("acme", "globex", "initech")


@pytest.fixture(scope="module")
def tenants_gateway(
    tiny_model_dir: Path, kafka_settings: KafkaSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("tenants-gw")
    keys = {f"{t}-{role}": f"test-{t}-{role}-key" for t in TENANTS for role in ("client", "admin")}
    keys_file = folder / "keys.json"
    keys_file.write_text(
        json.dumps(
            [
                {"key_id": name, "key_sha256": hash_key(key), "tenant": name.split("-")[0],
                 "role": name.split("-")[1]}
                for name, key in keys.items()
            ]
        )
    )  # fmt: skip
    gw = start_gateway(
        folder,
        model_dir=tiny_model_dir,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        env={
            "GATEWAY_BASE_MODEL_NAME": "tiny-llama",
            "GATEWAY_KEYS_FILE": str(keys_file),
            "GATEWAY_MAX_CONCURRENCY": "16",
        },
    )
    gw.keys = keys
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def registry(tenants_gateway: Gateway) -> AdapterRegistry:
    return AdapterRegistry(tenants_gateway.data_dir / "registry")


@pytest.fixture(scope="module")
def adapters(
    registry: AdapterRegistry, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tenant-loras")
    made = {}
    for name, seed in (("acme", 31), ("globex", 32), ("acme-next", 33)):
        card = AdapterCard(base_model="tiny-llama", tenant=name.split("-")[0], run_id=name)
        made[name] = registry.add(write_lora(tiny_model_dir, root / name, seed=seed), card)
    return made


async def _ask(gw: Gateway, tenant: str, model: str = "raftloop") -> tuple[str, str]:
    client = gw.aclient(f"{tenant}-client")
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=ASK, max_tokens=16, temperature=0
    )
    return raw.parse().choices[0].message.content or "", raw.headers["x-raftloop-adapter"]


def _serving(gw: Gateway, tenant: str) -> str:
    return asyncio.run(_ask(gw, tenant))[1]


async def test_each_tenant_is_served_by_its_own_alias_in_one_batch(
    tenants_gateway: Gateway,
    registry: AdapterRegistry,
    adapters: dict[str, str],
    kafka_settings: KafkaSettings,
) -> None:
    gw = tenants_gateway
    acme, globex = adapters["acme"], adapters["globex"]
    # Greedy references: each adapter pinned by its own tenant, and the base model.
    pinned = {
        "acme": await _ask(gw, "acme", acme),
        "globex": await _ask(gw, "globex", globex),
        "initech": await _ask(gw, "initech", "tiny-llama"),
    }
    assert pinned["initech"][1] == "base"
    assert len({text for text, _ in pinned.values()}) == 3  # the adapters change the answer

    for tenant, adapter_id in (("acme", acme), ("globex", globex)):
        state = await asyncio.to_thread(registry.promote, adapter_id, tenant=tenant)
        await announce(kafka_settings, state, before=None)
    for tenant, adapter_id in (("acme", acme), ("globex", globex)):

        def switched(t: str = tenant, a: str = adapter_id) -> bool:
            return _serving(gw, t) == a

        await asyncio.to_thread(wait_until, switched, 60, f"{tenant}'s alias")

    asked = [t for t in TENANTS for _ in range(3)]
    answers = await asyncio.gather(*(_ask(gw, t) for t in asked))
    for tenant, answer in zip(asked, answers, strict=True):
        assert answer == pinned[tenant], tenant  # same adapter header, same greedy text


async def test_another_tenants_adapter_is_as_unknown_as_a_made_up_one(
    tenants_gateway: Gateway, adapters: dict[str, str]
) -> None:
    gw = tenants_gateway
    acme = adapters["acme"]
    listed = {m.id for m in (await gw.aclient("globex-client").models.list()).data}
    assert adapters["globex"] in listed
    assert acme not in listed
    assert adapters["acme-next"] not in listed
    assert {"raftloop", "tiny-llama"} <= listed

    with pytest.raises(openai.NotFoundError) as hidden:
        await _ask(gw, "globex", acme)
    with pytest.raises(openai.NotFoundError) as missing:
        await _ask(gw, "globex", "f" * 64)
    assert hidden.value.body["message"] == missing.value.body["message"].replace("f" * 64, acme)  # type: ignore[index]

    view = httpx.get(f"{gw.url}/v1/admin/adapters", headers=gw.auth("globex-admin")).json()
    assert view["tenant"] == "globex"
    assert [a["adapter_id"] for a in view["adapters"]] == [adapters["globex"]]


def test_the_gateway_cannot_switch_another_tenants_alias(
    tenants_gateway: Gateway, registry: AdapterRegistry, adapters: dict[str, str]
) -> None:
    gw = tenants_gateway
    before = {t: registry.serving(tenant=t) for t in TENANTS}
    for method, path, body in (
        ("POST", "/v1/admin/adapters/promote", {"adapter_id": adapters["acme"]}),
        ("POST", "/v1/admin/adapters/rollback", {}),
        ("PUT", "/v1/admin/canary", {"adapter_id": adapters["acme"], "share": 1.0}),
    ):
        for tenant in ("globex", "acme"):
            headers = gw.auth(f"{tenant}-admin")
            response = httpx.request(method, gw.url + path, json=body, headers=headers)
            assert response.status_code == 410, response.text
    assert {t: registry.serving(tenant=t) for t in TENANTS} == before


async def test_a_promotion_for_acme_leaves_globex_serving_unchanged(
    tenants_gateway: Gateway,
    registry: AdapterRegistry,
    adapters: dict[str, str],
    kafka_settings: KafkaSettings,
) -> None:
    gw = tenants_gateway
    globex_before = await _ask(gw, "globex")
    nxt = adapters["acme-next"]
    state = await asyncio.to_thread(registry.promote, nxt, tenant="acme")
    await announce(kafka_settings, state, before=adapters["acme"])
    await asyncio.to_thread(wait_until, lambda: _serving(gw, "acme") == nxt, 60, "acme's switch")
    assert await _ask(gw, "globex") == globex_before
    assert (await _ask(gw, "initech"))[1] == "base"
    info = [
        line
        for line in httpx.get(f"{gw.url}/metrics").text.splitlines()
        if line.startswith("raftloop_gateway_serving_adapter_info{")
    ]
    assert any('tenant="acme"' in line and nxt in line for line in info), info
    assert any('tenant="globex"' in line and globex_before[1] in line for line in info), info
