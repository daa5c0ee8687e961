"""Retrieval hook: the gateway asks the real rag service, cites numbered sources, records chunks."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gateway_support import EventLog, Gateway, interaction_of, start_gateway

from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.embedded import free_port
from raftloop_core.events import DocumentSubmitted
from raftloop_core.messaging import ensure_topics, make_broker
from raftloop_core.settings import KafkaSettings, RuntimeSettings
from raftloop_core.testing import spawn_service, stop_service, uvicorn_command
from raftloop_core.topics import Topic

pytestmark = pytest.mark.integration
demo_kb = pytest.importorskip("raftloop_demo_kb")
pytest.importorskip("raftloop_rag")
QUESTION = "How much storage does the Free plan include?"
ANSWERING = "plans-and-pricing.md"


@dataclass
class Rag:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    topic: str


@pytest.fixture(scope="module")
def rag_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rag-gateway")


@pytest.fixture(scope="module")
def rag(
    rag_folder: Path, kafka_settings: KafkaSettings, unique_module: Callable[[str], str]
) -> Iterator[Rag]:
    """The real rag service as a process, on its own topic, sharing the gateway's data folder."""
    topic = unique_module("kb")
    ensure_topics(kafka_settings, {topic: 1})
    port = free_port()
    log = rag_folder / "rag.log"
    env = os.environ | {
        "RAFTLOOP_DATA_DIR": str(rag_folder / "var"),
        "RAFTLOOP_LOG_FORMAT": "text",
        "HF_HUB_OFFLINE": "1",
        "KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "RAG_TOPIC": topic,
        "RAG_CONSUMER_GROUP": unique_module("rag"),
        "RAG_COLLECTION": unique_module("kb"),
    }
    ensure_dev_credentials(RuntimeSettings(data_dir=rag_folder / "var"))
    # Not waited for here: `indexed` waits until it answers a retrieval.
    proc = spawn_service(uvicorn_command("raftloop_rag.main:build", port), env=env, log=log)
    service = Rag(f"http://127.0.0.1:{port}", proc, log, topic)
    yield service
    stop_service(proc, timeout_s=15)


@pytest.fixture(scope="module")
def unique_module() -> Callable[[str], str]:
    import uuid

    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
async def indexed(rag: Rag, rag_folder: Path, kafka_settings: KafkaSettings) -> Rag:
    """The demo handbook indexed through rag's topic; waits until the answer is retrievable."""
    broker = make_broker(kafka_settings)
    async with broker:
        await broker.start()
        for doc in demo_kb.documents():
            text = demo_kb.document_text(doc.name)
            event = DocumentSubmitted(
                document_id=doc.name,
                source=doc.name,
                title=doc.title,
                text=text,
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
                format=doc.format,
            )
            await broker.publish(event, topic=rag.topic, key=doc.name.encode())
    key = ensure_dev_credentials(RuntimeSettings(data_dir=rag_folder / "var")).api_keys["internal"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if rag.proc.poll() is not None:
            raise RuntimeError(rag.log.read_text()[-3000:])
        try:
            found = httpx.post(
                f"{rag.url}/v1/retrieve",
                json={"query": QUESTION, "k": 3},
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            if found.status_code == 200 and found.json()["chunks"]:
                return rag
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"rag never answered:\n{rag.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def rag_gateway(
    indexed: Rag, rag_folder: Path, tiny_model_dir: Path, kafka_settings: KafkaSettings
) -> Iterator[Gateway]:
    gw = start_gateway(
        rag_folder,
        model_dir=tiny_model_dir,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        env={"GATEWAY_RAG_URL": indexed.url, "GATEWAY_RAG_K": "2"},
    )
    yield gw
    gw.stop()


async def test_answers_cite_the_answering_document_and_the_event_records_it(
    rag_gateway: Gateway, gateway_events: EventLog
) -> None:
    done = rag_gateway.client().chat.completions.create(
        model="raftloop", messages=[{"role": "user", "content": QUESTION}], max_tokens=4
    )
    answer = done.choices[0].message.content
    assert answer is not None
    assert "\n\nSources: [1] " in answer
    assert ANSWERING in answer.split("Sources:")[1]
    await gateway_events.wait_for(
        lambda: gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=interaction_of(done.id))
    )
    [event] = gateway_events.where(Topic.CHAT_COMPLETED, interaction_id=interaction_of(done.id))
    retrieved = event.value["retrieved"]
    assert 1 <= len(retrieved) <= 2
    assert ANSWERING in {chunk["document_id"] for chunk in retrieved}
    assert all(chunk["text"] and isinstance(chunk["score"], float) for chunk in retrieved)
    assert event.value["messages"] == [{"role": "user", "content": QUESTION}]  # as the user sent


def test_streamed_answers_cite_sources_too(rag_gateway: Gateway) -> None:
    stream = rag_gateway.client().chat.completions.create(
        model="raftloop",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=3,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert ANSWERING in text.split("Sources:")[1]


def test_internal_callers_and_opt_out_get_no_retrieval(rag_gateway: Gateway) -> None:
    for client, metadata in (
        (rag_gateway.client("internal"), None),
        (rag_gateway.client(), {"rag": "off"}),
    ):
        done = client.chat.completions.create(
            model="raftloop",
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=3,
            metadata=metadata,
        )
        assert done.choices[0].message.content is not None
        assert "Sources:" not in done.choices[0].message.content


def test_rag_down_means_a_plain_answer(rag_gateway: Gateway, rag: Rag) -> None:
    # Last in this module: it stops the rag service the fixtures share.
    rag.proc.terminate()
    rag.proc.wait(15)
    done = rag_gateway.client().chat.completions.create(
        model="raftloop", messages=[{"role": "user", "content": QUESTION}], max_tokens=3
    )
    assert done.choices[0].message.content is not None
    assert "Sources:" not in done.choices[0].message.content
    assert "retrieval failed; answering without sources" in rag_gateway.log.read_text()
