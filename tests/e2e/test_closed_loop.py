"""The closed loop as a new user meets it: `raftloop up`, then `raftloop demo`, all real.

Every service runs as a process under `raftloop up` on the real broker; the demo asks questions
through the gateway with the official openai client, the judge scores them, the simulated
reviewers work the queue through the hitl API, the trainer's threshold starts a run, the gate
promotes the adapter, and the gateway serves it without a restart.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import raftloop_demo_kb as kb
from openai import OpenAI

from raftloop_cli.looptest import (
    LOOP_SETTINGS,
    LoadSampler,
    busy_loops,
    dead_lettered,
    newest_run,
    run_demo,
    topic_offsets,
)
from raftloop_cli.testing import Platform

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    # About 12 minutes of SmolLM2 on two idle cores (a chat and a judge generation per
    # interaction, about 100 interactions, then training and the gate). `make test` runs it;
    # `make e2e` runs it alone; `-m "not e2e"` leaves it out of a quick local run.
    pytest.mark.timeout(5400),
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
# CI sets E2E_BUSY_LOOPS=1 (.ci/run): one busy-loop process holds a core for the whole loop,
# beside the rest of the suite, so the backpressure path (a judge that waits for a slow model
# instead of dropping work) is exercised at every landing. `make e2e` runs on what it finds.
BUSY_LOOPS = int(os.environ.get("E2E_BUSY_LOOPS", "0"))


def _keep_run_reports(root: Path) -> None:
    """The trainer's reports, scores, datasets and logs (not its weights): the figures of a
    passing loop (examples without a retrieved oracle, error analysis) and the evidence of a
    failing one."""
    for path in [*root.rglob("trainer/runs/*/*"), *root.rglob("trainer/jobs/*/*")]:
        if path.is_file() and path.suffix in {".json", ".jsonl", ".md", ".png", ".log"}:
            kept = ARTIFACTS / path.parent.parent.name / path.parent.name / path.name
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, kept)


def _keep_loop_figures(
    seconds: float, load: LoadSampler, offsets: dict[str, int]
) -> dict[str, int]:
    """CI runs this loop beside the rest of the suite and a busy loop: keep the load it met and
    what was dead-lettered (returned)."""
    letters = dead_lettered(offsets)
    figures = {
        "demo_seconds": round(seconds),
        "busy_loops": BUSY_LOOPS,
        **load.figures(),
        "dead_lettered": letters,
    }
    (ARTIFACTS / "loop-figures.json").write_text(json.dumps(figures, indent=2))
    return letters


def test_the_loop_trains_gates_and_serves_a_better_adapter(tmp_path: Path) -> None:
    platform = Platform.start(tmp_path, env=LOOP_SETTINGS, timeout_s=900)
    try:
        with busy_loops(BUSY_LOOPS), LoadSampler() as load:
            demo = run_demo(platform, timeout_min=80)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "demo.txt").write_text(demo.stdout + demo.stderr)  # the figures, kept
        assert demo.returncode == 0, demo.stdout[-6000:] + demo.stderr[-3000:]
        assert "hold-out token F1" in demo.stdout
        keys = platform.credentials().api_keys

        run = newest_run(platform, keys["admin"])
        assert run["status"] == "promoted", run
        assert run["trigger"].startswith("trigger:"), run["trigger"]  # the threshold, not by hand
        report = json.loads((Path(run["report_path"]).parent / "report.json").read_text())
        [f1] = [row for row in report["sets"]["holdout"] if row["metric"] == "token_f1"]
        assert f1["n"] >= 20, f1  # the run waited for a hold-out that can judge it
        assert f1["candidate"] > f1["baseline"], f1
        assert f1["ci_low"] > 0, f1
        assert (Path(run["report_path"]).parent / "report.png").stat().st_size > 0

        offsets = topic_offsets(platform)
        letters = _keep_loop_figures(demo.seconds, load, offsets)
        assert not letters, f"the loop dead-lettered work: {letters}"  # slowness is not loss
        curated = offsets["dataset.example.curated.v1"]
        assert curated >= run["train_examples"] + run["holdout_examples"]
        assert offsets["chat.completed.v1"] >= curated
        assert offsets["interaction.ingested.v1"] >= curated
        assert offsets["interaction.judged.v1"] >= curated
        assert offsets["review.completed.v1"] >= curated
        assert offsets["adapter.promoted.v1"] >= 1

        client = OpenAI(base_url=f"{platform.url('gateway')}/v1", api_key=keys["client"])
        question = kb.holdout_questions()[1]
        raw = client.chat.completions.with_raw_response.create(
            model="raftloop",
            messages=[{"role": "user", "content": question.question}],
            max_tokens=64,
            temperature=0,
        )
        answer = raw.parse()
        assert raw.headers["x-raftloop-adapter"] == run["adapter_id"]
        assert answer.system_fingerprint == run["adapter_id"]
        assert answer.choices[0].message.content
        _keep_run_reports(tmp_path)
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "up.log").write_text(platform.output())
        _keep_run_reports(tmp_path)
        platform.kill()
        raise
    platform.stop()  # Ctrl-C leaves nothing running
