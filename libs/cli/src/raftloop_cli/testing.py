"""The whole platform as processes, for end-to-end and reliability tests.

`Platform.start(folder)` runs `raftloop up` as a child process on free ports with its own data
folder and broker, waits for "raftloop is up", and `stop()` sends Ctrl-C and checks that no
child is left. Nothing here is a double: it is the same program a user runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from raftloop_cli.services import SERVICES
from raftloop_core.credentials import DevCredentials
from raftloop_core.embedded import free_port

RAFTLOOP = (sys.executable, "-m", "raftloop_cli")
TEST_KAFKA = {
    # Tansu takes about half the session timeout to finish a group join.
    "KAFKA_SESSION_TIMEOUT_MS": "3000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
}


def platform_env(folder: Path, *, only: str | None = None) -> dict[str, str]:
    """Settings for one private platform: its data folder, broker port and service ports."""
    env = {
        "RAFTLOOP_DATA_DIR": str(folder / "var"),
        "RAFTLOOP_BROKER_PORT": str(free_port()),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        **TEST_KAFKA,
    }
    for spec in SERVICES:
        env[spec.port_env] = str(free_port())
    if only is not None:
        env["RAFTLOOP_SERVICES"] = only
    return env


@dataclass(frozen=True)
class Shutdown:
    """How `raftloop up` stopped after Ctrl-C."""

    seconds: float
    """From the signal until `up` and every process of the platform were gone."""
    code: int | None
    """`up`'s exit code; None if it had not exited by the deadline."""
    left: list[int]
    """Pids of the platform's processes still there at the deadline (then killed)."""
    lines: list[str]
    """What `up` printed after the signal."""
    exited: list[tuple[float, str]]
    """(seconds after the signal, what) for each process as it went: `up`, `broker`, a
    service's name, or another program's name."""

    def gone_at(self, label: str) -> float:
        """When the last process called `label` went."""
        return max(t for t, what in self.exited if what == label)


class PlatformFailed(AssertionError):
    """The platform did not come up, or did not stop cleanly."""


@dataclass
class Platform:
    """A running `raftloop up` and what a test needs to talk to it."""

    folder: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path
    _out: IO[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        folder: Path,
        *,
        only: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 600,
        wait: bool = True,
    ) -> Platform:
        """Start `raftloop up` and (with `wait`) wait until every service is healthy.

        It runs in a session of its own, as a shell runs a command: `interrupt()` sends Ctrl-C
        to that session's process group, as a terminal does.
        """
        folder.mkdir(parents=True, exist_ok=True)
        settings = {**platform_env(folder, only=only), **(env or {})}
        log = folder / "up.log"
        out = open(log, "wb")  # noqa: SIM115 (closed in stop())
        inherited = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
        proc = subprocess.Popen(
            [*RAFTLOOP, "up"],
            env={**inherited, **settings},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        platform = cls(folder, settings, proc, log, out)
        if not wait:
            return platform
        try:
            platform.wait_for_line("raftloop is up", timeout_s)
        except BaseException:
            platform.kill()
            raise
        return platform

    @property
    def data_dir(self) -> Path:
        """The platform's data folder."""
        return Path(self.env["RAFTLOOP_DATA_DIR"])

    @property
    def bootstrap_servers(self) -> str:
        """The broker's address."""
        return f"127.0.0.1:{self.env['RAFTLOOP_BROKER_PORT']}"

    def url(self, service: str) -> str:
        """Base URL of one service."""
        return f"http://127.0.0.1:{self.env[f'{service.upper()}_PORT']}"

    def credentials(self) -> DevCredentials:
        """The development keys and accounts `raftloop up` wrote."""
        return DevCredentials.model_validate_json((self.data_dir / "credentials.json").read_text())

    def output(self) -> str:
        """Everything `raftloop up` printed so far."""
        return self.log.read_text(errors="replace")

    def wait_for_line(self, text: str, timeout_s: float) -> None:
        """Wait until `raftloop up` prints `text`."""
        deadline = time.monotonic() + timeout_s
        while text not in self.output():
            if self.proc.poll() is not None:
                raise PlatformFailed(f"raftloop up exited early:\n{self.output()[-6000:]}")
            if time.monotonic() > deadline:
                raise PlatformFailed(f"no {text!r} in {timeout_s:.0f} s:\n{self.output()[-6000:]}")
            time.sleep(0.2)

    def cli(
        self, args: Sequence[str], *, timeout_s: float = 120, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run another `raftloop` command against this platform."""
        inherited = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
        return subprocess.run(
            [*RAFTLOOP, *args],
            env={**inherited, **self.env, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers}
            | dict(env or {}),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def processes(self) -> list[psutil.Process]:
        """Every process of this platform: `up` and whatever runs with its data folder.

        Found by environment, not by parentage, so a child that outlived its parent (an
        orphan) is found too.
        """
        mine = str(self.data_dir)
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.pid == self.proc.pid or proc.environ().get("RAFTLOOP_DATA_DIR") == mine:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def interrupt(self, timeout_s: float = 60) -> Shutdown:
        """Ctrl-C as a terminal sends it, and measure how the platform stops."""
        before = len(self.log.read_bytes().splitlines())
        # Who runs is read before the signal: a process that exits while the scan is still
        # reading every process's environment would otherwise never be seen to go.
        left = running = {p.pid: _label(p) for p in self.processes()}
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        deadline = started + timeout_s
        code: int | None = None
        exited: list[tuple[float, str]] = []
        while time.monotonic() < deadline:
            code = self.proc.poll()
            now = {p.pid: _label(p) for p in self.processes()}
            exited += [(time.monotonic() - started, running[pid]) for pid in running.keys() - now]
            running = {**now, **{pid: label for pid, label in running.items() if pid in now}}
            left = {pid: label for pid, label in now.items() if pid != self.proc.pid}
            if code is not None and not left:
                break
            time.sleep(0.05)
        seconds = time.monotonic() - started
        for pid in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        if code is None:
            self.proc.kill()
        self.proc.wait()
        self._close()
        printed = self.log.read_bytes().splitlines()[before:]
        return Shutdown(
            seconds=seconds,
            code=code,
            left=sorted(left),
            exited=exited,
            lines=[line.decode(errors="replace") for line in printed],
        )

    def stop(self, timeout_s: float = 90) -> Shutdown:
        """Ctrl-C, as a user would; raises if it fails or leaves a process running."""
        shutdown = self.interrupt(timeout_s)
        if shutdown.code is None:
            raise PlatformFailed(f"raftloop up did not stop in {timeout_s:.0f} s")
        if shutdown.code != 0:
            raise PlatformFailed(
                f"raftloop up exited with {shutdown.code}:\n{self.output()[-4000:]}"
            )
        if shutdown.left:
            raise PlatformFailed(f"left running after Ctrl-C: {shutdown.left}")
        return shutdown

    def kill(self) -> None:
        """Kill the platform and everything it started (cleanup after a failure)."""
        try:
            tree = [psutil.Process(self.proc.pid)]
            tree += tree[0].children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for proc in tree:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        psutil.wait_procs(tree, timeout=10)
        self._close()

    def _close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def _label(proc: psutil.Process) -> str:
    """`up`, `broker`, a service's name, or the program's name."""
    try:
        args = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    for arg in args:
        if arg.endswith(".main:build") and arg.startswith("raftloop_"):
            return arg.removeprefix("raftloop_").removesuffix(".main:build")
    if args[-1:] == ["up"] and "raftloop_cli" in args:
        return "up"
    if args and Path(args[0]).name == "tansu":
        return "broker"
    if "-m" in args[:-1]:
        return args[args.index("-m") + 1]  # a job such as raftloop_trainer.train
    return Path(args[0]).name if args else "?"
