"""`make test`: the closed loop (tests/e2e) in its own pytest session, alongside everything else.

The rest of the suite keeps about one of two cores busy on average (it waits on brokers, group
joins and service starts), while the closed loop is SmolLM2 generation and training. One after
the other they took 2,590 s in CI (2026-12-07). Side by side they took 2,523 s: the two contend
more than that idle core suggests (the loop 1,758 s instead of about 820 s alone, the rest
2,523 s instead of about 1,800 s), so the saving is small. The loop's output is kept in
`test-artifacts/e2e/pytest.log` and printed when both are done; the exit status is the worse of
the two.

With paths or node ids among the arguments (`make test PYTEST_ARGS="libs/core"`), or with
`TEST_SERIAL=1`, this is plain `pytest` with those arguments.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
E2E = "tests/e2e"
LOG = ROOT / "test-artifacts" / "e2e" / "pytest.log"
NO_TESTS = 5
"""pytest's exit status when nothing was selected (`-m "not e2e"` leaves the loop empty)."""


def names_paths(args: list[str]) -> bool:
    """Whether the arguments select tests by path or node id."""
    return any(not a.startswith("-") and (ROOT / a.split("::")[0]).exists() for a in args)


def pytest(args: list[str]) -> list[str]:
    """The command line of a pytest session with `args`."""
    return [sys.executable, "-m", "pytest", *args]


def run_serial(args: list[str]) -> int:
    """Plain pytest."""
    return subprocess.call(pytest(args), cwd=ROOT)


def run_side_by_side(args: list[str]) -> int:
    """The closed loop and the rest as two pytest sessions at once; the worse exit status."""
    LOG.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with (
        LOG.open("w") as log,
        tempfile.TemporaryDirectory(prefix="raftloop-e2e-") as basetemp,
    ):
        # Its own temporary folder and no cache: the two sessions share nothing on disk.
        loop_args = [*args, "-p", "no:cacheprovider", f"--basetemp={basetemp}", E2E]
        loop = subprocess.Popen(pytest(loop_args), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            rest = subprocess.call(pytest([*args, f"--ignore={E2E}"]), cwd=ROOT)
            rest_s = time.monotonic() - started
            loop_status = loop.wait()
        finally:
            if loop.poll() is None:
                loop.terminate()
                loop.wait(30)
    loop_s = time.monotonic() - started
    sys.stdout.write(f"\n== {E2E}, run alongside the rest (its log: {LOG.relative_to(ROOT)})\n")
    sys.stdout.write(LOG.read_text())
    sys.stdout.write(
        f"== the rest: exit {rest} after {rest_s:.0f} s; "
        f"{E2E}: exit {loop_status} after {loop_s:.0f} s\n"
    )
    return max(rest, 0 if loop_status == NO_TESTS else loop_status)


def main(args: list[str]) -> int:
    """Run the suite the way `make test` means."""
    if os.environ.get("TEST_SERIAL") == "1" or names_paths(args):
        return run_serial(args)
    return run_side_by_side(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
