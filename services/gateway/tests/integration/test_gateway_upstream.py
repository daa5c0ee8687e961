"""The upstream backend: a gateway in front of another OpenAI-compatible server.

The upstream here is a second real gateway (local backend); the front one calls it with an
internal-role key, so the interaction is captured once, by the front gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_support import (
    EventLog,
    Gateway,
    interaction_of,
    logprobs_of,
    start_gateway,
    write_lora,
)
from openai.types.chat import ChatCompletionMessageParam

from raftloop_core.registry import AdapterCard, AdapterRegistry
from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import Topic

pytestmark = pytest.mark.integration
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Support is open Monday to Friday"}
]


@pytest.fixture(scope="module")
def front(
    gateway: Gateway,
    tiny_model_dir: Path,
    kafka_settings: KafkaSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    gw = start_gateway(
        tmp_path_factory.mktemp("front"),
        model_dir=tiny_model_dir,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        env={
            "GATEWAY_BACKEND": "upstream",
            "GATEWAY_UPSTREAM_URL": f"{gateway.url}/v1",
            "GATEWAY_UPSTREAM_API_KEY": gateway.keys["internal"],
            "GATEWAY_UPSTREAM_MODEL": "tiny-llama",
            "GATEWAY_MAX_CONCURRENCY": "64",
        },
    )
    yield gw
    gw.stop()


async def test_non_streamed_passthrough_is_captured_once_by_the_front(
    front: Gateway, gateway: Gateway, gateway_events: EventLog
) -> None:
    direct = gateway.client().chat.completions.create(
        model="tiny-llama", messages=ASK, max_tokens=6, temperature=0
    )
    via = front.client().chat.completions.create(
        model="raftloop", messages=ASK, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2
    )
    assert via.choices[0].message.content == direct.choices[0].message.content
    assert via.usage is not None
    assert len(logprobs_of(via.choices[0])) == via.usage.completion_tokens
    interaction = interaction_of(via.id)
    await gateway_events.wait_for(
        lambda: gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=interaction)
    )
    await asyncio.sleep(0.5)
    [event] = gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=interaction)
    assert event.value["base_model"] == "tiny-llama"
    assert event.value["answer"] == via.choices[0].message.content
    # The front calls the upstream with an internal key, which is never captured.
    assert gateway_events.where(Topic.CHAT_COMPLETED, key_id="dev-internal") == []


async def test_streamed_passthrough(front: Gateway, gateway_events: EventLog) -> None:
    client = front.aclient()
    stream = await client.chat.completions.create(
        model="raftloop",
        messages=ASK,
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None
    interaction = interaction_of(chunks[0].id)
    await gateway_events.wait_for(
        lambda: gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=interaction)
    )
    [event] = gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=interaction)
    assert event.value["answer"] == text
    assert event.value["usage"]["completion_tokens"] == chunks[-1].usage.completion_tokens
    await client.close()


def test_the_adapter_is_passed_as_the_model_name(
    front: Gateway, gateway: Gateway, tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = write_lora(tiny_model_dir, tmp_path / "lora", seed=11)
    card = AdapterCard(base_model="tiny-llama")
    adapter_id = AdapterRegistry(gateway.data_dir / "registry").add(folder, card)
    assert AdapterRegistry(front.data_dir / "registry").add(folder, card) == adapter_id
    direct = gateway.client().chat.completions.create(
        model=adapter_id, messages=ASK, max_tokens=6, temperature=0
    )
    raw = front.client().chat.completions.with_raw_response.create(
        model=adapter_id, messages=ASK, max_tokens=6, temperature=0
    )
    assert raw.headers["x-raftloop-adapter"] == adapter_id
    assert raw.parse().choices[0].message.content == direct.choices[0].message.content
