"""GATEWAY_MODEL_DTYPE=bfloat16: the engine serves the base and an adapter, batched, in bf16."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gateway_support import start_gateway, write_lora
from pydantic import ValidationError

from raftloop_core.registry import AdapterCard, AdapterRegistry
from raftloop_core.settings import KafkaSettings
from raftloop_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration


async def test_a_bfloat16_gateway_serves_the_base_and_an_adapter_in_one_batch(
    tiny_model_dir: Path, kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    gw = start_gateway(
        tmp_path / "gw",
        model_dir=tiny_model_dir,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        env={"GATEWAY_BASE_MODEL_NAME": "tiny-llama", "GATEWAY_MODEL_DTYPE": "bfloat16"},
    )
    try:
        adapter = AdapterRegistry(gw.data_dir / "registry").add(
            write_lora(tiny_model_dir, tmp_path / "lora", seed=3),
            AdapterCard(base_model="tiny-llama", run_id="bf16"),
        )
        client = gw.aclient("internal")
        answers = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": "Refunds are issued within"}],
                    max_tokens=8,
                    temperature=0,
                )
                for model in ("tiny-llama", adapter, "tiny-llama", adapter)
            )
        )
        for done in answers:
            assert done.usage is not None
            assert done.usage.completion_tokens > 0
            assert done.choices[0].finish_reason in {"stop", "length"}
        assert answers[0].choices[0].message.content == answers[2].choices[0].message.content
    finally:
        gw.stop()


def test_an_unsupported_dtype_is_refused_with_the_choices() -> None:
    with pytest.raises(ValidationError) as refused:
        GatewaySettings(model_dtype="float16")
    assert "'float32' or 'bfloat16'" in str(refused.value)
