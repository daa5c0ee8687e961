# Reports which validators the deploy checks used (and their versions) after the run.
from __future__ import annotations

import pytest
from deploy_tools import USED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if USED:
        terminalreporter.section("deploy validators used")
        for name, version in sorted(USED.items()):
            terminalreporter.write_line(f"{name}: {version}")
