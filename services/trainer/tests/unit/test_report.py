from __future__ import annotations

import json
from pathlib import Path

from raftloop_trainer.distractors import LocalDistractorSource, chunk_text
from raftloop_trainer.domain import GateDecision
from raftloop_trainer.metrics import PairedDiff
from raftloop_trainer.report import (
    candidate_lines,
    data_summary,
    flat_metrics,
    hpo_lines,
    markdown,
    report_payload,
    write_report,
)


def test_report_is_written_as_json_markdown_and_png(tmp_path: Path) -> None:
    diffs = {
        "holdout": [PairedDiff("token_f1", 0.2, 0.6, 0.4, 0.3, 0.5, 25)],
        "regression": [PairedDiff("token_f1", 0.3, 0.28, -0.02, -0.06, 0.02, 8)],
    }
    payload = report_payload(
        title="run-1",
        baseline="base",
        candidate="adapter:abc",
        diffs=diffs,
        decision=GateDecision(True, ["token_f1 gain +0.4"]),
        pairwise={"measured": False, "reason": "no judge configured"},
    )
    path = write_report(tmp_path, payload)
    assert json.loads(path.read_text())["decision"]["promote"] is True
    md = (tmp_path / "report.md").read_text()
    assert "**Gate: PROMOTE**" in md
    assert "| token_f1 | 0.2000 | 0.6000 | +0.4000 | +0.3000 .. +0.5000 |" in md
    assert "Win rate not measured: no judge configured." in md
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")
    flat = flat_metrics(diffs)
    assert flat["holdout.token_f1.ci_low"] == 0.3
    assert flat["regression.token_f1.diff"] == -0.02


def test_local_distractors_rank_by_shared_words_and_skip_excluded_ids() -> None:
    text = (
        "Refunds take five days. Refunds go to the card. Support is open on Monday. "
        "Plans cost money each month. Backups run every night at two."
    )
    chunks = chunk_text("doc", text, title="Doc", max_words=8)
    assert all(len(c.text.split()) <= 10 for c in chunks)
    assert " ".join(c.text for c in chunks) == text
    source = LocalDistractorSource(chunks)
    found = source.distractors("When do refunds reach my card?", k=2, exclude_ids=[])
    assert "Refunds" in found[0].text
    skipped = source.distractors("refunds", k=5, exclude_ids=[found[0].chunk_id])
    assert found[0].chunk_id not in [c.chunk_id for c in skipped]
    assert source.containing("Backups run every night") is not None


def test_the_report_counts_examples_without_a_retrieved_oracle() -> None:
    chunk = {"chunk_id": "doc#0", "text": "Refunds take five days."}
    train: list[dict[str, object]] = [
        {"oracle_chunks": [chunk]},
        {"oracle_chunks": []},
        {"oracle_chunks": [chunk]},
    ]
    holdout: list[dict[str, object]] = [{"oracle_chunks": []}]
    data = data_summary(train, holdout)
    assert data == {
        "train_examples": 3,
        "holdout_examples": 1,
        "without_oracle": 2,
        "without_oracle_share": 0.5,
    }
    payload = report_payload(
        title="run", baseline="base", candidate="c", diffs={}, decision=None, extra={"data": data}
    )
    assert "2 of 4 (50.0%) had no retrieved chunk that answers" in markdown(payload)
    assert data_summary([], [])["without_oracle_share"] == 0.0


def test_candidates_table_shows_each_gain_interval_win_rate_and_the_pick() -> None:
    f1 = {"baseline": 0.18, "candidate": 0.29, "diff": 0.11, "ci_low": -0.01, "ci_high": 0.24}
    rows = [
        {
            "label": "sft+dpo",
            "adapter_id": "a" * 64,
            "chosen": True,
            "holdout": {"token_f1": f1},
            "pairwise": {"measured": True, "win_rate": 0.6, "ci_low": 0.45, "ci_high": 0.74},
            "passes": False,
        },
        {
            "label": "sft",
            "adapter_id": "b" * 64,
            "chosen": False,
            "holdout": {},
            "pairwise": {"measured": False, "reason": "off"},
            "passes": False,
        },
    ]
    lines = candidate_lines(rows)
    assert "| sft+dpo **(chosen)** | `aaaaaaaaaaaa` | 0.1800 → 0.2900 | +0.1100 |" in lines[-2]
    assert "-0.0100 .. +0.2400 | 0.600 (0.450 .. 0.740) | fails |" in lines[-2]
    assert lines[-1] == "| sft | `bbbbbbbbbbbb` | n/a | n/a | n/a | not measured | fails |"
    assert candidate_lines(None) == []


def test_hpo_section_lists_trials_and_says_whether_the_defaults_were_beaten() -> None:
    hpo = {
        "default_value": 2.5,
        "best_value": 1.25,
        "beats_defaults": True,
        "train_examples": 40,
        "validation_examples": 10,
        "trials": [
            {"number": 0, "state": "COMPLETE", "value": 2.5, "seconds": 31.2, "params": {}},
            {
                "number": 1,
                "state": "PRUNED",
                "value": None,
                "seconds": 9.0,
                "params": {"rank": 8, "learning_rate": 0.0003304463634024569},
            },
        ],
    }
    md = "\n".join(hpo_lines(hpo))
    assert "defaults 2.5000, best 1.2500; the chosen values beat the defaults" in md
    assert "| 1 | PRUNED | n/a | 9 | rank=8, learning_rate=0.0003304 |" in md
    assert "Train 40, validation 10 examples." in md
    skipped = hpo_lines({"skipped_reason": "too few examples"})
    assert skipped[-1] == "Not searched: too few examples."
