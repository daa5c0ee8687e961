# The reliability suite's shared fleet (one broker and the loop's services as processes) and
# the RELIABILITY.md writer that runs after the session when RELIABILITY_REPORT=1.
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import Fleet
from reliability_tools import RESULTS_DIR, knobs, write_report

LOOP = ("ingest", "gateway", "judge", "hitl")
SETTINGS = {
    # Short answers and the tiny Llama keep the CPU cost of every interaction low.
    "GATEWAY_DEFAULT_MAX_TOKENS": "8",
    "GATEWAY_MAX_TOKENS_LIMIT": "16",
    "GATEWAY_MAX_QUEUE": "64",
    "JUDGE_MAX_TOKENS": "8",
    "JUDGE_CRITERIA": '["correctness"]',
    "JUDGE_CONCURRENCY": "2",
    "JUDGE_INVALID_OUTPUT_ATTEMPTS": "1",
    "JUDGE_MAX_RETRIES": "1",
    "KAFKA_MAX_MESSAGE_BYTES": "262144",  # oversize test messages stay small for the broker
}


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Broker plus ingest, gateway (tiny Llama), judge and hitl, each its own process."""
    from raftloop_models.tiny import build_tiny_llama

    model = build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")
    folder = tmp_path_factory.mktemp("fleet")
    env = {**SETTINGS, "GATEWAY_BASE_MODEL_PATH": str(model)}
    running = Fleet.start(folder, LOOP, env)
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
        path = write_report(environment=knobs())
        terminalreporter.write_line(f"wrote {Path(path).name}")
