"""The real gateway as a process (`uvicorn --factory ...main:build`), for judge tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.embedded import free_port
from raftloop_core.settings import RuntimeSettings


@dataclass(frozen=True)
class RunningGateway:
    """Where the gateway listens and the dev keys it accepts."""

    base_url: str
    keys: dict[str, str]
    log: Path


@contextmanager
def run_gateway(folder: Path, model_dir: Path, bootstrap: str) -> Iterator[RunningGateway]:
    """Start a gateway on SmolLM2 and the test broker; wait until ready; stop it afterwards."""
    data_dir = folder / "var"
    keys = ensure_dev_credentials(RuntimeSettings(data_dir=data_dir)).api_keys
    port = free_port()
    log = folder / "gateway.log"
    env = os.environ | {
        "RAFTLOOP_DATA_DIR": str(data_dir),
        "RAFTLOOP_LOG_FORMAT": "text",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "GATEWAY_BASE_MODEL_PATH": str(model_dir),
        "GATEWAY_PORT": str(port),
        "GATEWAY_ALIAS_POLL_S": "600",
    }
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "raftloop_gateway.main:build",
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"gateway exited with {proc.returncode}: {log.read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not ready: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield RunningGateway(f"{url}/v1", keys, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
