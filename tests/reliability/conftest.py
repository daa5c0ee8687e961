# The reliability suite's shared fleet (one broker and the loop's services as processes) and
# the RELIABILITY.md writer that runs after the session when RELIABILITY_REPORT=1.
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import ALL, SETTINGS, Fleet
from reliability_tools import RESULTS_DIR, knobs, machine, write_report


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Broker plus all six services (gateway and trainer on the tiny Llama), each a process."""
    from raftloop_models.tiny import build_tiny_llama

    model = build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")
    folder = tmp_path_factory.mktemp("fleet")
    env = {**SETTINGS, "GATEWAY_BASE_MODEL_PATH": str(model), "TRAINER_BASE_MODEL_PATH": str(model)}
    running = Fleet.start(folder, ALL, env)
    try:
        yield running
    finally:
        running.stop()
        keep = RESULTS_DIR / "logs"
        keep.mkdir(parents=True, exist_ok=True)
        for name, text in running.logs().items():
            (keep / f"{name}.log").write_text(text[-200_000:])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if os.environ.get("RELIABILITY_REPORT") == "1" and RESULTS_DIR.exists():
        path = write_report(environment=knobs() | machine())
        terminalreporter.write_line(f"wrote {Path(path).name}")
