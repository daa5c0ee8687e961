"""Ctrl-C stops `raftloop up` at any moment within 10 s (#18): real processes, real broker.

Ctrl-C is sent as a terminal sends it, to the process group of `up`'s session, so a child
left in that group would get it too. Each time: every process of the platform (found by its
data folder, so orphans count) is gone within the bound, `up` exits 0, and it prints fewer
than 200 lines after the signal.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from raftloop_models import ensure_smollm2

from raftloop_cli.testing import Platform, Shutdown
from raftloop_core.testing import plan_examples
from raftloop_core.topics import Topic

pytestmark = pytest.mark.integration

BOUND_S = 10.0
MAX_LINES = 200
QUIET = {
    "RAFTLOOP_DEMO_KB": "false",
    "GATEWAY_RAG_URL": "",  # no rag in these platforms: answer without retrieval
    "TRAINER_AUTO_TRAIN": "false",
}


def assert_clean(shutdown: Shutdown, moment: str, services: list[str]) -> None:
    print(f"{moment}: stopped in {shutdown.seconds:.1f} s, {len(shutdown.lines)} lines after")
    print("  gone (s after Ctrl-C):", ", ".join(f"{w} {t:.1f}" for t, w in shutdown.exited))
    tail = "\n".join(shutdown.lines[-40:])
    assert shutdown.left == [], f"{moment}: left running {shutdown.left}\n{tail}"
    assert shutdown.code == 0, f"{moment}: exit {shutdown.code}\n{tail}"
    assert shutdown.seconds < BOUND_S, f"{moment}: {shutdown.seconds:.1f} s\n{tail}"
    assert len(shutdown.lines) < MAX_LINES, f"{moment}: {len(shutdown.lines)} lines\n{tail}"
    broker = shutdown.gone_at("broker")
    for name in services:
        assert shutdown.gone_at(name) <= broker, f"{moment}: the broker went before {name}"


def wait_for_process(platform: Platform, needle: str, timeout_s: float) -> psutil.Process:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in platform.processes():
            try:
                if any(needle in part for part in proc.cmdline()):
                    return proc
            except psutil.NoSuchProcess:
                continue
        assert platform.proc.poll() is None, platform.output()[-4000:]
        time.sleep(0.1)
    raise AssertionError(f"no {needle} process in {timeout_s:.0f} s:\n{platform.output()[-4000:]}")


def test_ctrl_c_during_start(tmp_path: Path) -> None:
    platform = Platform.start(tmp_path, only="ingest,gateway", env=QUIET, wait=False)
    try:
        # Ingest's lifespan connects to the broker and joins its groups: where Ctrl-C used to
        # kill the broker under it, and it spun for two minutes.
        platform.wait_for_line("Waiting for application startup", 60)
        assert "ingest ready" not in platform.output()
    except BaseException:
        platform.kill()
        raise
    assert_clean(platform.interrupt(), "during start", ["ingest"])


class ChatLoad:
    """A few clients chatting with the gateway in a loop until told to stop."""

    def __init__(self, url: str, key: str, clients: int = 3) -> None:
        self.url, self.key = url, key
        self.answered = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._chat, daemon=True) for _ in range(clients)]

    def _chat(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as http:
            model = http.get("/v1/models").json()["data"][0]["id"]
            while not self._stop.is_set():
                try:
                    response = http.post(
                        "/v1/chat/completions",
                        json={
                            "model": model,
                            "messages": [{"role": "user", "content": "How do I reset a password?"}],
                            "max_tokens": 8,
                        },
                    )
                except httpx.HTTPError:
                    time.sleep(0.2)  # the gateway is stopping
                    continue
                if response.status_code == 200:
                    self.answered += 1
                else:
                    time.sleep(0.2)  # 503 while the model loads

    def __enter__(self) -> ChatLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=35)


def start_training(platform: Platform, admin_key: str) -> None:
    """Curate examples straight onto the broker, then start a run on demand."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=platform.bootstrap_servers, acks="all")
    for event in plan_examples(24, base_model=ensure_smollm2().name):
        producer.send(
            Topic.EXAMPLE_CURATED,
            key=str(event.interaction_id).encode(),
            value=event.model_dump_json().encode(),
        )
    producer.flush()
    producer.close()
    deadline = time.monotonic() + 60
    while True:
        response = httpx.post(
            f"{platform.url('trainer')}/v1/admin/train",
            headers={"Authorization": f"Bearer {admin_key}"},
            timeout=10,
        )
        if response.status_code == 202:
            return
        # 409 nothing_to_train until the trainer has consumed the examples
        assert time.monotonic() < deadline, response.text
        time.sleep(0.5)


def test_ctrl_c_under_load_during_training(tmp_path: Path) -> None:
    platform = Platform.start(tmp_path, only="ingest,gateway,trainer", env=QUIET, timeout_s=300)
    try:
        keys = platform.credentials().api_keys
        start_training(platform, keys["admin"])
        wait_for_process(platform, "raftloop_trainer.train", 60)
        with ChatLoad(platform.url("gateway"), keys["client"]) as load:
            deadline = time.monotonic() + 120
            while load.answered < 3:
                assert time.monotonic() < deadline, platform.output()[-4000:]
                time.sleep(0.2)
            shutdown = platform.interrupt()
    except BaseException:
        platform.kill()
        raise
    # The training job stops with the trainer (it resumes after a restart), before the broker.
    assert_clean(
        shutdown,
        "under load, during training",
        ["ingest", "gateway", "trainer", "raftloop_trainer.train"],
    )
