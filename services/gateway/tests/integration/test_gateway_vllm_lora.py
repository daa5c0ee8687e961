"""vLLM upstream: the gateway loads each tenant's adapter into vLLM by name at run time (#17).

The upstream is a small fake of vLLM's OpenAI server with its runtime LoRA API
(`POST /v1/load_lora_adapter`): it records what it was asked to load and which model each chat
named, and answers chats only for names it has loaded, as vLLM does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from gateway_support import Gateway, start_gateway, write_lora

from raftloop_core.registry import AdapterCard, AdapterRegistry
from raftloop_core.settings import KafkaSettings

pytestmark = pytest.mark.integration
SEEN_BY_VLLM = "/models/registry"  # where the vLLM server mounts the registry


@dataclass
class FakeVllm:
    url: str
    loads: list[dict[str, Any]] = field(default_factory=list)
    chats: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=lambda: {"tiny-llama"})
    refuse: set[str] = field(default_factory=set)


def _serve(fake: FakeVllm) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: int, payload: Any) -> None:
            raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if self.path == "/v1/load_lora_adapter":
                fake.loads.append(body)
                if body["lora_name"] in fake.refuse:  # as a server without runtime updating
                    self._answer(404, {"detail": "Not Found"})
                    return
                if body["lora_name"] in fake.names:
                    message = f"The lora adapter '{body['lora_name']}' has already been loaded."
                    self._answer(400, {"object": "error", "message": message, "code": 400})
                    return
                fake.names.add(body["lora_name"])
                self._answer(200, "Success: LoRA adapter added successfully.")
                return
            fake.chats.append(body["model"])
            if body["model"] not in fake.names:
                message = f"The model `{body['model']}` does not exist."
                self._answer(404, {"object": "error", "message": message, "code": 404})
                return
            self._answer(
                200,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"hi from {body['model']}"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
                },
            )

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_port}/v1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def vllm() -> Iterator[FakeVllm]:
    fake = FakeVllm(url="")
    server = _serve(fake)
    yield fake
    server.shutdown()


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("vllm-loras")
    return [write_lora(tiny_model_dir, root / f"lora-{i}", seed=40 + i) for i in range(2)]


@pytest.fixture(scope="module")
def front(
    vllm: FakeVllm,
    adapters: list[Path],
    tiny_model_dir: Path,
    kafka_settings: KafkaSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, list[str]]]:
    folder = tmp_path_factory.mktemp("vllm-front")
    registry = AdapterRegistry(folder / "var" / "registry")
    ids = [registry.add(a, AdapterCard(base_model="tiny-llama")) for a in adapters]
    registry.promote(ids[0])  # the default tenant's alias, read when the gateway starts
    gw = start_gateway(
        folder,
        model_dir=tiny_model_dir,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        env={
            "GATEWAY_BACKEND": "upstream",
            "GATEWAY_UPSTREAM_URL": vllm.url,
            "GATEWAY_UPSTREAM_MODEL": "tiny-llama",
            "GATEWAY_UPSTREAM_REGISTRY_DIR": SEEN_BY_VLLM,
            "GATEWAY_UPSTREAM_MAX_RETRIES": "0",
        },
    )
    yield gw, ids
    gw.stop()


def _chat(gw: Gateway, model: str) -> tuple[str, str]:
    raw = gw.client().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    return raw.parse().choices[0].message.content or "", raw.headers["x-raftloop-adapter"]


def test_the_alias_adapter_is_loaded_into_vllm_by_name_once(
    front: tuple[Gateway, list[str]], vllm: FakeVllm
) -> None:
    gw, ids = front
    serving = ids[0]
    for _ in range(3):
        assert _chat(gw, "raftloop") == (f"hi from {serving}", serving)
    assert vllm.loads == [{"lora_name": serving, "lora_path": f"{SEEN_BY_VLLM}/adapters/{serving}"}]
    assert vllm.chats[-3:] == [serving] * 3
    assert _chat(gw, "tiny-llama") == ("hi from tiny-llama", "base")


def test_a_pinned_adapter_is_loaded_on_first_use_and_a_reload_is_harmless(
    front: tuple[Gateway, list[str]], vllm: FakeVllm
) -> None:
    gw, ids = front
    pinned = ids[1]
    assert _chat(gw, pinned) == (f"hi from {pinned}", pinned)
    assert [load["lora_name"] for load in vllm.loads].count(pinned) == 1
    assert _chat(gw, pinned)[1] == pinned
    assert [load["lora_name"] for load in vllm.loads].count(pinned) == 1


def test_an_adapter_vllm_already_has_is_not_an_error(
    front: tuple[Gateway, list[str]], vllm: FakeVllm, tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Loaded by another replica or before a restart: vLLM answers 400 "already been loaded".
    gw, _ = front
    registry = AdapterRegistry(gw.data_dir / "registry")
    folder = write_lora(tiny_model_dir, tmp_path / "lora", seed=48)
    known = registry.add(folder, AdapterCard(base_model="tiny-llama"))
    vllm.names.add(known)
    assert _chat(gw, known) == (f"hi from {known}", known)


def test_a_refused_load_is_a_clear_upstream_error(
    front: tuple[Gateway, list[str]], vllm: FakeVllm, tiny_model_dir: Path, tmp_path: Path
) -> None:
    gw, _ = front
    registry = AdapterRegistry(gw.data_dir / "registry")
    folder = write_lora(tiny_model_dir, tmp_path / "lora", seed=49)
    refused = registry.add(folder, AdapterCard(base_model="tiny-llama"))
    vllm.refuse.add(refused)
    with pytest.raises(openai.APIStatusError) as failed:
        _chat(gw, refused)
    assert failed.value.status_code == 502
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in failed.value.message
    assert refused not in vllm.chats
