"""`raftloop up`: run the broker and every installed service as supervised child processes."""

from __future__ import annotations

import contextlib
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

STOP_GRACE_S = 5.0
"""How long a service may take to exit after SIGTERM (uvicorn's own drain is shorter)."""
BROKER_GRACE_S = 2.0
"""How long the broker may take to exit after SIGTERM, once the services are gone."""
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
            port=port,
            storage=storage,
            log_path=self.data_dir / "logs" / "broker.log",
            own_session=True,
        )
        self.broker.start()
        return self.broker.bootstrap_servers

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested (Ctrl-C, SIGTERM, SIGHUP)."""
        return self._stopping.is_set()

    def start(self, spec: ServiceSpec) -> Child:
        """Start one service as a child process."""
        if port_in_use("127.0.0.1", spec.port):
            raise StartupError(
                f"port {spec.port} for {spec.name} is already in use; stop what runs there or "
                f"set {spec.port_env} to a free port"
            )
        env = {**service_urls(), **os.environ, **self.env}
        # A session of its own: a terminal's Ctrl-C reaches `up` alone, which stops the
        # services first and the broker last (#18); the broker dying first made ingest spin.
        proc = subprocess.Popen(
            spec.command(sys.executable),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        child = Child(spec, proc, COLOURS[len(self.children) % len(COLOURS)])
        assert proc.stdout is not None
        child.relay = threading.Thread(target=self._relay, args=(child, proc.stdout), daemon=True)
        child.relay.start()
        self.children.append(child)
        return child

    def run_task(
        self, args: list[str], env: dict[str, str]
    ) -> subprocess.CompletedProcess[str] | None:
        """Run a helper command to completion; None if a stop was requested (it is then ended)."""
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        while True:
            try:
                out, err = proc.communicate(timeout=0.25)
                return subprocess.CompletedProcess(args, proc.returncode, out, err)
            except subprocess.TimeoutExpired:
                if self.stopping:
                    _stop_tree([psutil.Process(proc.pid)], grace_s=STOP_GRACE_S)
                    proc.communicate()
                    return None

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

    def wait_healthy(self, child: Child) -> bool:
        """Block until the child answers /healthz (True) or a stop is requested (False).

        Raises:
            StartupError: it exited or did not become healthy in time.
        """
        deadline = time.monotonic() + child.spec.start_timeout_s
        url = f"{child.spec.url}/healthz"
        while time.monotonic() < deadline:
            if self.stopping:
                return False
            if child.proc.poll() is not None:
                raise StartupError(
                    f"{child.spec.name} exited with code {child.proc.returncode} while starting; "
                    f"see its log above or in {self.data_dir / 'logs' / (child.spec.name + '.log')}"
                )
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            self._stopping.wait(0.25)
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

    def stop_all(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop every service (and what it started), then the broker; bounded in time.

        The services go first, all at once, while the broker still runs, so their consumers
        leave their groups and nothing retries against a dead broker. Each gets SIGTERM (its
        own shutdown cancels work in flight, e.g. a training job, which resumes after a
        restart) and `grace_s` to exit, then SIGKILL.
        """
        _stop_tree([psutil.Process(c.proc.pid) for c in self.children if _alive(c.proc)], grace_s)
        for child in self.children:
            child.proc.wait()  # reap, so no zombie is left behind
        for child in self.children:
            if child.relay is not None:
                child.relay.join(timeout=1.0)  # their last lines, unless a grandchild holds on
        if self.broker:
            self.broker.stop(timeout_s=BROKER_GRACE_S)


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def _stop_tree(parents: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM `parents`, wait up to `grace_s`, then SIGKILL them and every descendant.

    Only the parents get SIGTERM: each stops its own children in order (the trainer cancels
    its training job); what is still there after the grace, descendants included, is killed.
    """
    tree: dict[int, psutil.Process] = {}

    def collect() -> None:
        for parent in parents:
            with contextlib.suppress(psutil.NoSuchProcess):
                for proc in [parent, *parent.children(recursive=True)]:
                    tree.setdefault(proc.pid, proc)

    collect()
    for parent in parents:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    pending = list(parents)
    while pending and time.monotonic() < deadline:
        collect()  # what they start while stopping is stopped too
        _, pending = psutil.wait_procs(pending, timeout=0.1)
    collect()
    left = [proc for proc in tree.values() if proc.is_running()]
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(left, timeout=2)
