"""Running a real gateway process and reading what it published, for the gateway's tests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import openai
from faststream.kafka import KafkaMessage
from openai.types.chat import ChatCompletionTokenLogprob
from openai.types.chat.chat_completion import Choice

from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.embedded import free_port
from raftloop_core.events import AdapterPromoted, AdapterRolledBack, event_key
from raftloop_core.messaging import consumer_options, make_broker
from raftloop_core.registry import AliasState
from raftloop_core.settings import KafkaSettings, RuntimeSettings
from raftloop_core.testing import spawn_service, stop_service, uvicorn_command
from raftloop_core.topics import Topic


@dataclass
class Gateway:
    """A gateway started with `uvicorn --factory raftloop_gateway.main:build`."""

    url: str
    keys: dict[str, str]
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def client(self, role: str = "client", **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=self.keys[role], max_retries=0, **kwargs
        )

    def aclient(self, role: str = "client", **kwargs: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key=self.keys[role], max_retries=0, **kwargs
        )

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics").text
        out = {}
        for line in text.splitlines():
            if line.startswith("raftloop_gateway_"):
                name, value = line.split(" ")
                out[name] = float(value)
        return out

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        stop_service(self.proc, timeout_s=15)


def start_gateway(
    folder: Path,
    *,
    model_dir: Path,
    bootstrap_servers: str,
    env: dict[str, str] | None = None,
    timeout_s: float = 180.0,
    ready_path: str = "/readyz",
) -> Gateway:
    """Start a gateway on a free port and wait until its model is loaded."""
    data_dir = folder / "var"
    keys = ensure_dev_credentials(RuntimeSettings(data_dir=data_dir)).api_keys
    port = free_port()
    log = folder / "gateway.log"
    full_env = (
        os.environ
        | {
            "RAFTLOOP_DATA_DIR": str(data_dir),
            "RAFTLOOP_LOG_FORMAT": "text",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "GATEWAY_BASE_MODEL_PATH": str(model_dir),
            "GATEWAY_PORT": str(port),
            "GATEWAY_ALIAS_POLL_S": "600",
            "GATEWAY_MAX_TOKENS_LIMIT": "64",
            "GATEWAY_DEFAULT_MAX_TOKENS": "12",
        }
        | (env or {})
    )
    proc = spawn_service(
        uvicorn_command("raftloop_gateway.main:build", port),
        env=full_env,
        log=log,
        ready_url=f"http://127.0.0.1:{port}{ready_path}",
        timeout_s=timeout_s,
        name="gateway",
    )
    return Gateway(f"http://127.0.0.1:{port}", keys, data_dir, log, proc)


def interaction_of(completion_id: str) -> str:
    """The interaction id (a UUID) inside a completion id `chatcmpl-<its hex>`."""
    return str(UUID(hex=completion_id.removeprefix("chatcmpl-")))


def logprobs_of(choice: Choice) -> list[ChatCompletionTokenLogprob]:
    """The token logprobs of a choice that was asked for with `logprobs=True`."""
    assert choice.logprobs is not None
    assert choice.logprobs.content is not None
    return choice.logprobs.content


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'a condition'}")
        time.sleep(0.1)


@dataclass
class Received:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: dict[str, Any]


@dataclass
class EventLog:
    """Everything a consumer group read from some topics, from the beginning."""

    kafka: KafkaSettings
    topics: list[str]
    group: str
    items: list[Received] = field(default_factory=list)

    async def __aenter__(self) -> EventLog:
        self.broker = make_broker(self.kafka)

        @self.broker.subscriber(*self.topics, **consumer_options(self.kafka, group_id=self.group))  # type: ignore[untyped-decorator]
        async def grab(msg: KafkaMessage) -> None:
            raw: Any = msg.raw_message  # one aiokafka ConsumerRecord: not a batch subscriber
            self.items.append(
                Received(raw.topic, raw.partition, raw.offset, raw.key, json.loads(msg.body))
            )

        await self.broker.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.broker.stop()

    def where(self, topic: str, **match: Any) -> list[Received]:
        return [
            r
            for r in self.items
            if r.topic == topic and all(r.value.get(k) == v for k, v in match.items())
        ]

    async def wait_for(
        self, predicate: Callable[[], object], timeout_s: float = 60.0, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or 'events'}")
            await asyncio.sleep(0.1)


def write_lora(model_dir: Path, target: Path, *, seed: int) -> Path:
    """Save a small random LoRA adapter for `model_dir` with peft (safetensors)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(str(target), safe_serialization=True)
    return target


async def announce(kafka: KafkaSettings, state: AliasState, *, before: str | None) -> None:
    """Publish the event the trainer publishes after switching `state` (a registry switch).

    The gateway's tests switch through the registry and this event, as the trainer does, so
    they need no trainer process; the trainer's own tests cover its routes.
    """
    event: AdapterPromoted | AdapterRolledBack
    if state.history[-1].action == "promoted":
        assert state.adapter_id is not None
        topic, event = (
            Topic.ADAPTER_PROMOTED,
            AdapterPromoted(
                tenant=state.tenant,
                alias=state.alias,
                adapter_id=state.adapter_id,
                previous_adapter_id=before,
                base_model="test",
                revision=state.revision,
            ),
        )
    else:
        topic, event = (
            Topic.ADAPTER_ROLLED_BACK,
            AdapterRolledBack(
                tenant=state.tenant,
                alias=state.alias,
                from_adapter_id=before,
                to_adapter_id=state.adapter_id,
                base_model="test",
                revision=state.revision,
            ),
        )
    broker = make_broker(kafka)
    async with broker:
        await broker.start()
        await broker.publish(event, topic=topic, key=event_key(topic, event))
