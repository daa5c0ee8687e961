"""Training progress (step, loss, eta) to the log and to a status file the service reads."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger("raftloop_trainer.train")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON so that readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def read_progress(path: Path) -> dict[str, Any] | None:
    """The last progress a job wrote, or None."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


class ProgressCallback(TrainerCallback):
    """Logs each optimisation step and keeps `progress.json` current.

    `stage` (e.g. `dpo`) goes into every record when set: a recipe's later stage writes the same
    file, and the status shows which stage the step belongs to.
    """

    def __init__(
        self, path: Path, *, resumed_from: str | None = None, stage: str | None = None
    ) -> None:
        self.path = path
        self.resumed_from = resumed_from
        self.stage = stage
        self.started = time.monotonic()
        self.first_step: int | None = None

    # transformers calls each hook with (args, state, control, **kwargs); each reads what it needs.

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:  # noqa: ARG002
        """Record step, loss and an eta after every logged step."""
        logs = logs or {}
        if "loss" not in logs:
            return
        if self.first_step is None:
            self.first_step = max(state.global_step - 1, 0)
        done = state.global_step - self.first_step
        per_step = (time.monotonic() - self.started) / max(done, 1)
        eta = per_step * max(state.max_steps - state.global_step, 0)
        progress = {
            "state": "training",
            "step": state.global_step,
            "max_steps": state.max_steps,
            "epoch": round(float(state.epoch or 0.0), 3),
            "loss": round(float(logs["loss"]), 5),
            "eta_s": round(eta, 1),
            "resumed_from": self.resumed_from,
            "updated_at": time.time(),
        }
        if self.stage:
            progress["stage"] = self.stage
        write_json_atomic(self.path, progress)
        log.info("training step", extra=progress)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:  # noqa: ARG002
        """Mark the job as trained."""
        current = read_progress(self.path) or {}
        current |= {"state": "trained", "step": state.global_step, "updated_at": time.time()}
        write_json_atomic(self.path, current)
