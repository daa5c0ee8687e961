"""Failpoints: a deliberate crash at a named point of a consumer, for the fault-injection suite.

Consumers pass through a point right after their database transaction and before the broker's
offset commit (`crash_point("ingest.after_write")`), the window where at-least-once delivery
must be redone without duplicates. A point fires only when `RAFTLOOP_FAILPOINTS_DIR` is set and
a file named after the point is in that folder: the process removes the file and kills itself
with SIGKILL, so no shutdown hook, offset commit or flush runs. The suite arms a point by
creating the file, waits for the process to die and restarts it.

Unset (the default), a point costs one environment lookup. Production mode refuses to start
with the variable set (`RuntimeSettings`).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

ENV = "RAFTLOOP_FAILPOINTS_DIR"

log = logging.getLogger(__name__)


def armed(point: str) -> Path | None:
    """The file that arms `point`, when the folder is set and the file exists."""
    folder = os.environ.get(ENV)
    if not folder:
        return None
    trigger = Path(folder) / point
    return trigger if trigger.exists() else None


def crash_point(point: str) -> None:
    """SIGKILL this process here if `point` is armed (once per arming)."""
    trigger = armed(point)
    if trigger is None:
        return
    trigger.unlink(missing_ok=True)
    for handler in logging.getLogger().handlers:
        handler.flush()
    log.warning("failpoint fired: killing this process", extra={"failpoint": point})
    os.kill(os.getpid(), signal.SIGKILL)
