"""The services `raftloop up` knows how to run, and where each one listens."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

GRACEFUL_SHUTDOWN_S = 3
"""Seconds uvicorn lets open requests finish after SIGTERM before it closes them."""


@dataclass(frozen=True)
class ServiceSpec:
    """One service: its package, default port and how long it may take to become healthy."""

    name: str
    default_port: int
    start_timeout_s: float = 120.0

    @property
    def package(self) -> str:
        """The import name of the service's package."""
        return f"raftloop_{self.name}"

    @property
    def port_env(self) -> str:
        """The setting that moves its port."""
        return f"{self.name.upper()}_PORT"

    @property
    def port(self) -> int:
        """The port it listens on (its `<SVC>_PORT` setting or the default)."""
        raw = os.environ.get(self.port_env, str(self.default_port))
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ValueError(f"{self.port_env}={raw!r} is not a port number (1-65535)")
        return int(raw)

    @property
    def url(self) -> str:
        """Its base URL on this machine."""
        return f"http://127.0.0.1:{self.port}"

    def installed(self) -> bool:
        """Whether its package and composition root are importable."""
        try:
            return importlib.util.find_spec(f"{self.package}.main") is not None
        except ModuleNotFoundError:
            return False

    def command(self, python: str) -> list[str]:
        """The child process command line (uvicorn; a stop during start ends the start)."""
        return [
            python,
            "-m",
            "raftloop_cli.serve",
            f"{self.package}.main:build",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            # Open requests (a streaming chat) get this long after SIGTERM, so that `up`'s
            # Ctrl-C ends within its bound (#18).
            "--timeout-graceful-shutdown",
            str(GRACEFUL_SHUTDOWN_S),
        ]


# Start order: what others call first (rag before gateway, gateway before judge).
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("rag", 8001, start_timeout_s=180),
    ServiceSpec("ingest", 8002),
    ServiceSpec("gateway", 8000, start_timeout_s=240),
    ServiceSpec("judge", 8003, start_timeout_s=180),
    ServiceSpec("hitl", 8080),
    ServiceSpec("trainer", 8004),
)


def installed_services() -> list[ServiceSpec]:
    """The services whose packages are installed here."""
    return [spec for spec in SERVICES if spec.installed()]


def service_urls() -> dict[str, str]:
    """Environment that tells each service where the others are (the user's settings win)."""
    urls = {spec.name: spec.url for spec in SERVICES}
    env = {f"RAFTLOOP_{name.upper()}_URL": url for name, url in urls.items()}
    env["GATEWAY_RAG_URL"] = urls["rag"]
    env["JUDGE_ENDPOINT_URL"] = f"{urls['gateway']}/v1"  # the judge model: the gateway's own
    # The local gateway batches: the judge's requests share decode steps with the chat clients'
    # (in their own admission lane), so a few in flight keep its rows busy without a long queue.
    env["JUDGE_CONCURRENCY"] = "4"
    env["JUDGE_BATCH_SIZE"] = "4"
    env["JUDGE_REQUEST_TIMEOUT_S"] = "180"
    # torch's OpenMP threads spin while they wait for each other; when the services share the
    # cores with each other (or a laptop's other work) that spinning turned a 0.1 s decode step
    # into 8 s. Passive waiting costs little on an idle machine (measured in BENCHMARKS.md).
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env
