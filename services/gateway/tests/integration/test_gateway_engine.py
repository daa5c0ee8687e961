"""The batching engine through the real openai client: shared passes, mixed adapters, cancels."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_support import Gateway, start_gateway, wait_until, write_lora

from raftloop_core.registry import AdapterCard, AdapterRegistry
from raftloop_core.settings import KafkaSettings

pytestmark = pytest.mark.integration
PROMPTS = [
    "Reset your password from the account page",
    "The capital of France is Paris. Support is open Monday to Friday and",
    "Refunds are issued within five business days",
]


@pytest.fixture(scope="module")
def engine_gateway(
    tiny_model_dir: Path, kafka_settings: KafkaSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway that keeps at most two adapters loaded, so a third evicts one."""
    gw = start_gateway(
        tmp_path_factory.mktemp("engine-gw"),
        model_dir=tiny_model_dir,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        env={
            "GATEWAY_BASE_MODEL_NAME": "tiny-llama",
            "GATEWAY_MAX_LOADED_ADAPTERS": "2",
            "GATEWAY_MAX_TOKENS_LIMIT": "4096",
            "GATEWAY_MAX_CONCURRENCY": "16",
        },
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def adapters(
    engine_gateway: Gateway, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[str]:
    registry = AdapterRegistry(engine_gateway.data_dir / "registry")
    root = tmp_path_factory.mktemp("engine-loras")
    return [
        registry.add(
            write_lora(tiny_model_dir, root / f"lora-{i}", seed=10 + i),
            AdapterCard(base_model="tiny-llama", run_id=f"engine-{i}"),
        )
        for i in range(3)
    ]


async def _greedy(gateway: Gateway, model: str, prompt: str, max_tokens: int = 24) -> str:
    client = gateway.aclient("internal")  # internal callers get no retrieval and no capture
    done = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
    )
    return done.choices[0].message.content or ""


async def test_two_adapters_and_the_base_in_one_batch_answer_as_they_do_alone(
    engine_gateway: Gateway, adapters: list[str]
) -> None:
    models = ["tiny-llama", adapters[0], adapters[1]]
    cases = [(model, prompt) for model in models for prompt in PROMPTS]
    alone = [await _greedy(engine_gateway, model, prompt) for model, prompt in cases]
    assert len(set(alone)) > len(PROMPTS)  # the adapters really change answers
    steps_before = engine_gateway.metrics()["raftloop_gateway_engine_steps"]
    together = await asyncio.gather(*(_greedy(engine_gateway, m, p) for m, p in cases))
    steps = engine_gateway.metrics()["raftloop_gateway_engine_steps"] - steps_before
    assert together == alone
    # Nine answers of up to 24 tokens shared their decode steps instead of taking ~9 x 23.
    assert steps < 3 * 24, steps


async def test_a_third_adapter_evicts_the_least_recently_used(
    engine_gateway: Gateway, adapters: list[str]
) -> None:
    first = [await _greedy(engine_gateway, a, PROMPTS[0]) for a in adapters]
    assert engine_gateway.metrics()["raftloop_gateway_engine_adapters"] == 2
    again = await asyncio.gather(*(_greedy(engine_gateway, a, PROMPTS[0]) for a in adapters))
    assert again == first  # evicted adapters reload and answer the same
    assert engine_gateway.metrics()["raftloop_gateway_engine_adapters"] == 2


async def test_a_cancelled_stream_frees_its_row_and_disturbs_no_one(
    engine_gateway: Gateway,
) -> None:
    neighbour_alone = await _greedy(engine_gateway, "tiny-llama", PROMPTS[1], max_tokens=48)
    client = engine_gateway.aclient("internal")
    stream = await client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=4000,
        temperature=0,
        stream=True,
    )
    neighbour = asyncio.create_task(_greedy(engine_gateway, "tiny-llama", PROMPTS[1], 48))
    received = 0
    async for _ in stream:
        received += 1
        if received == 5:
            break
    await stream.close()  # the client leaves mid-answer
    assert await neighbour == neighbour_alone

    def idle() -> bool:
        return engine_gateway.metrics()["raftloop_gateway_engine_running"] == 0

    wait_until(idle, timeout_s=10, what="the cancelled row to leave the batch")
    tokens = engine_gateway.metrics()["raftloop_gateway_engine_tokens"]
    await asyncio.sleep(1.0)
    assert engine_gateway.metrics()["raftloop_gateway_engine_tokens"] == tokens  # nothing runs
