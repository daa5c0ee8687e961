"""The default serving model, SmolLM2-135M-Instruct from its offline wheel, behind the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_support import (
    EventLog,
    Gateway,
    announce,
    interaction_of,
    logprobs_of,
    start_gateway,
    wait_until,
    write_lora,
)
from openai.types.chat import ChatCompletionMessageParam

from raftloop_core.registry import AdapterCard, AdapterRegistry
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import Topic

pytestmark = pytest.mark.integration
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]


@pytest.fixture(scope="module")
def smol(
    smollm2_dir: Path, kafka_settings: KafkaSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gw = start_gateway(
        tmp_path_factory.mktemp("smollm2"),
        model_dir=smollm2_dir,
        bootstrap_servers=kafka_settings.bootstrap_servers,
    )
    yield gw
    gw.stop()


async def test_smollm2_answers_streamed_and_not_alike(
    smol: Gateway, gateway_events: EventLog
) -> None:
    client = smol.client()
    done = client.chat.completions.create(
        model="raftloop", messages=ASK, max_tokens=8, temperature=0, logprobs=True, top_logprobs=1
    )
    answer = done.choices[0].message.content
    assert answer is not None
    assert "Paris" in answer
    assert done.model == "raftloop"
    for token in logprobs_of(done.choices[0]):
        assert token.logprob <= token.top_logprobs[0].logprob + 1e-4  # greedy picks the top
    stream = client.chat.completions.create(
        model="raftloop", messages=ASK, max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == answer
    await gateway_events.wait_for(
        lambda: gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=interaction_of(done.id))
    )
    [event] = gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=interaction_of(done.id))
    assert event.value["base_model"] == smol_name(smol)
    assert event.value["answer"] == answer


def smol_name(gw: Gateway) -> str:
    return next(m.id for m in gw.client().models.list().data if getattr(m, "kind", None) == "base")


async def test_a_lora_on_smollm2_hot_swaps_and_rolls_back(
    smol: Gateway, smollm2_dir: Path, tmp_path: Path, kafka_settings: KafkaSettings
) -> None:
    folder = write_lora(smollm2_dir, tmp_path / "lora", seed=3)
    registry = AdapterRegistry(smol.data_dir / "registry")
    adapter_id = registry.add(folder, AdapterCard(base_model=smol_name(smol)))
    client = smol.client()

    def ask() -> tuple[str | None, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="raftloop", messages=ASK, max_tokens=6, temperature=0
        )
        return raw.parse().choices[0].message.content, raw.headers["x-raftloop-adapter"]

    before = ask()
    # Switched as the trainer switches: the registry, then the event the gateway follows.
    await announce(kafka_settings, registry.promote(adapter_id), before=None)
    wait_until(lambda: ask()[1] == adapter_id, timeout_s=120, what="the adapter to serve")
    after = ask()
    assert after[0] != before[0]
    await announce(kafka_settings, registry.rollback(), before=adapter_id)
    wait_until(lambda: ask()[1] == "base", timeout_s=60, what="the rollback")
    assert ask() == before
