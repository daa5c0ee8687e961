"""The real gateway as a process (`uvicorn --factory ...main:build`), for judge tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from raftloop_core.credentials import ensure_dev_credentials
from raftloop_core.embedded import free_port
from raftloop_core.settings import RuntimeSettings
from raftloop_core.testing import spawn_service, stop_service, uvicorn_command


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
    url = f"http://127.0.0.1:{port}"
    proc = spawn_service(
        uvicorn_command("raftloop_gateway.main:build", port),
        env=env,
        log=log,
        ready_url=f"{url}/readyz",
        timeout_s=300,
        name="gateway",
    )
    try:
        yield RunningGateway(f"{url}/v1", keys, log)
    finally:
        stop_service(proc, timeout_s=15)
