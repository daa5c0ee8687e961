"""`raftloop up`: run the broker and every installed service as supervised child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import psutil
from rich.console import Console

from raftloop_cli.services import ServiceSpec, service_urls
from raftloop_core.embedded import EmbeddedBroker, port_in_use

COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan")


class StartupError(RuntimeError):
    """The platform could not start; the message says what to do."""


@dataclass
class Child:
    """A running service process and the thread that relays its output."""

    spec: ServiceSpec
    proc: subprocess.Popen[bytes]
    colour: str
    relay: threading.Thread | None = None


@dataclass
class Supervisor:
    """Starts children, relays their logs with a coloured prefix, and stops them all together."""

    console: Console
    data_dir: Path
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)
    broker: EmbeddedBroker | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    def start_broker(self, port: int, storage: str) -> str:
        """Start the embedded broker (logs under the data folder) and return its address."""
        self.broker = EmbeddedBroker(
            port=port, storage=storage, log_path=self.data_dir / "logs" / "broker.log"
        )
        self.broker.start()
        return self.broker.bootstrap_servers

    def start(self, spec: ServiceSpec) -> Child:
        """Start one service as a child process."""
        if port_in_use("127.0.0.1", spec.port):
            raise StartupError(
                f"port {spec.port} for {spec.name} is already in use; stop what runs there or "
                f"set {spec.port_env} to a free port"
            )
        env = {**service_urls(), **os.environ, **self.env}
        proc = subprocess.Popen(
            spec.command(sys.executable),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        child = Child(spec, proc, COLOURS[len(self.children) % len(COLOURS)])
        assert proc.stdout is not None
        child.relay = threading.Thread(target=self._relay, args=(child, proc.stdout), daemon=True)
        child.relay.start()
        self.children.append(child)
        return child

    def _relay(self, child: Child, stream: IO[bytes]) -> None:
        log = open(self.data_dir / "logs" / f"{child.spec.name}.log", "ab")  # noqa: SIM115
        with log:
            for raw in iter(stream.readline, b""):
                log.write(raw)
                line = raw.decode(errors="replace").rstrip()
                self.console.print(
                    f"[{child.colour}]{child.spec.name:>8} |[/] {line}",
                    markup=True,
                    highlight=False,
                    soft_wrap=True,
                )

    def wait_healthy(self, child: Child) -> None:
        """Block until the child answers /healthz, or fail with the reason."""
        deadline = time.monotonic() + child.spec.start_timeout_s
        url = f"{child.spec.url}/healthz"
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise StartupError(
                    f"{child.spec.name} exited with code {child.proc.returncode} while starting; "
                    f"see its log above or in {self.data_dir / 'logs' / (child.spec.name + '.log')}"
                )
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise StartupError(
            f"{child.spec.name} did not become healthy within {child.spec.start_timeout_s:.0f}s"
        )

    def watch(self) -> int:
        """Wait until a child dies or a stop is requested; return the exit code for `up`."""
        while not self._stopping.is_set():
            for child in self.children:
                if child.proc.poll() is not None:
                    self.console.print(
                        f"[bold red]{child.spec.name} exited with code {child.proc.returncode}; "
                        "stopping everything[/]"
                    )
                    return 1
            if self.broker and self.broker.proc and self.broker.proc.poll() is not None:
                self.console.print("[bold red]the broker exited; stopping everything[/]")
                return 1
            self._stopping.wait(0.5)
        return 0

    def request_stop(self, *_: object) -> None:
        """Signal handler: ask `watch` to return."""
        self._stopping.set()

    def stop_all(self, timeout_s: float = 15.0) -> None:
        """Stop every child (and anything it started), then the broker."""
        procs: list[psutil.Process] = []
        for child in self.children:
            try:
                parent = psutil.Process(child.proc.pid)
                procs += [*parent.children(recursive=True), parent]
            except psutil.NoSuchProcess:
                continue
        for proc in procs:
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(procs, timeout=timeout_s)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(alive, timeout=5)
        for child in self.children:
            child.proc.wait()  # reap, so no zombie is left behind
        if self.broker:
            self.broker.stop()
