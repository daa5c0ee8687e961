"""The spawn-and-wait harness of `raftloop_core.testing`, on real processes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from raftloop_core.embedded import free_port
from raftloop_core.testing import ServiceNotReady, spawn_service, stop_service

pytestmark = pytest.mark.integration

# Answers 404 for its first two requests (a service that is up but not ready), then 200.
SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    seen = 0
    def do_GET(self):
        H.seen += 1
        self.send_response(200 if H.seen > 2 else 404)
        self.end_headers()
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_returns_once_the_url_answers_200_and_stops_with_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    proc = spawn_service(
        [sys.executable, "-c", SERVER, str(port)],
        env=os.environ,
        log=log,
        ready_url=f"http://127.0.0.1:{port}/readyz",
        timeout_s=30,
    )
    assert proc.poll() is None
    assert "serving" in log.read_text()
    assert stop_service(proc) is False  # SIGTERM was enough
    assert proc.returncode is not None
    assert stop_service(proc) is False  # already stopped: nothing to do


def test_a_process_that_dies_raises_with_the_tail_of_its_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('bad setting FOO'); sys.exit(3)"]
    with pytest.raises(ServiceNotReady, match=r"(?s)svc exited with 3.*bad setting FOO"):
        spawn_service(
            command,
            env=os.environ,
            log=tmp_path / "svc.log",
            ready_url=f"http://127.0.0.1:{free_port()}/readyz",
            timeout_s=30,
            name="svc",
        )


def test_a_process_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import time; print('starting', flush=True); time.sleep(60)"]
    with pytest.raises(ServiceNotReady, match=r"(?s)not ready after 1 s.*starting"):
        spawn_service(
            command,
            env=os.environ,
            log=tmp_path / "slow.log",
            ready_url=f"http://127.0.0.1:{free_port()}/readyz",
            timeout_s=1,
        )


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    ignore = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)"
    )
    log = tmp_path / "stubborn.log"
    proc = spawn_service([sys.executable, "-c", ignore], env=os.environ, log=log)
    deadline = time.monotonic() + 30
    while "up" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stop_service(proc, timeout_s=0.5) is True
    assert proc.returncode == -9
