"""The evaluation job's local pairwise judge on the tiny Llama: every hold-out item is judged in
both orders on the base weights the job already holds, and adapters come off cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raftloop_trainer.domain import GatePolicy
from raftloop_trainer.evaluate import (
    EvalConfig,
    EvalItem,
    Variant,
    evaluate,
    generate,
    pairwise_summary,
)
from raftloop_trainer.judging import JudgeConfig, LocalJudgeModel, judge_pairs
from raftloop_trainer.offline import compare_on_demo
from raftloop_trainer.train import LoraParams, load_model, lora_model

pytestmark = pytest.mark.integration


def random_lora(model_dir: Path, target: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(str(target), safe_serialization=True)
    return target


def items() -> list[EvalItem]:
    held = [
        EvalItem(
            item_id=f"h{i}",
            set="holdout",
            messages=[{"role": "user", "content": f"Docs... Question: what does plan {i} cost?"}],
            reference=f"{i + 3} dollars.",
            question=f"What does plan {i} cost?",
        )
        for i in range(4)
    ]
    general = EvalItem(
        item_id="r0",
        set="regression",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        reference="Paris.",
    )
    return [*held, general]


def test_local_judge_scores_each_holdout_pair_and_adapters_unload(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = random_lora(tiny_model_dir, tmp_path / "lora", seed=3)
    other = random_lora(tiny_model_dir, tmp_path / "lora2", seed=5)
    config = EvalConfig(
        base_model_dir=tiny_model_dir,
        items=items(),
        variants=[
            Variant(name="cand", adapter_dir=adapter),
            Variant(name="cand2", adapter_dir=other),
            Variant(name="base"),
        ],
        output_dir=tmp_path / "eval",
        max_new_tokens=4,
        device="cpu",
        judge=JudgeConfig(kind="local"),
        judge_pairs=[("base", "cand"), ("base", "cand2")],
    )
    result = evaluate(config)
    saved = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert saved["pairwise"] == result["pairwise"]
    # Every candidate is judged against the baseline; `pairwise` is the first pair's.
    by_candidate = result["pairwise_by_candidate"]
    assert sorted(by_candidate) == ["cand", "cand2"]
    assert by_candidate["cand"] == result["pairwise"]
    assert pairwise_summary(result, candidate="cand2")["candidate"] == "cand2"
    assert pairwise_summary(result, candidate="missing")["measured"] is False
    verdicts = result["pairwise"]["verdicts"]
    assert [v["item_id"] for v in verdicts] == ["h0", "h1", "h2", "h3"]  # hold-out only
    for v in verdicts:
        assert "error" in v or v["outcome"] in ("candidate", "baseline", "tie")
    summary = pairwise_summary(result)
    assert summary["judge"] == f"local:{tiny_model_dir.name}"
    if summary["measured"]:
        assert summary["n"] + summary["unjudged"] == 4
        assert summary["ci_low"] <= summary["win_rate"] <= summary["ci_high"]
    else:
        assert summary["reason"]

    # Each answer's generated tokens and why it ended (4 new tokens at most).
    for answers in result["variants"].values():
        assert all(0 <= n <= 4 for n in answers["new_tokens"])
        assert set(answers["finish_reasons"]) <= {"stop", "length"}
        ended = zip(answers["new_tokens"], answers["finish_reasons"], strict=True)
        assert all(n == 4 for n, reason in ended if reason == "length")

    # The base variant ran after the adapter was removed: same answers as a fresh base model.
    tokenizer, fresh = load_model(tiny_model_dir, "cpu")
    fresh.eval()
    assert generate(fresh, tokenizer, config.items, config) == result["variants"]["base"]["outputs"]


def test_local_judge_reads_a_preference_for_every_chat(tiny_model_dir: Path) -> None:
    tokenizer, model = load_model(tiny_model_dir, "cpu")
    # A freshly wrapped LoRA model still judges: the judge only needs next-token logits.
    judge = LocalJudgeModel(lora_model(model, LoraParams()).eval(), tokenizer, batch_size=3)
    assert all(judge.labels[label] for label in ("A", "B", "tie"))
    records = judge_pairs(
        judge,
        ["Q1?", "Q2?"],
        ["ref one", None],
        ["answer one", "answer two"],
        ["other one", "other two"],
    )
    assert len(records) == 2
    prefs = judge.preferences([[{"role": "user", "content": "Which?"}]] * 5)
    assert len(prefs) == 5
    for p in prefs:
        assert isinstance(p, str) or 0.0 <= p <= 1.0


def test_offline_comparison_reports_the_win_rate_or_why_not(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    adapter = random_lora(tiny_model_dir, tmp_path / "lora", seed=4)
    payload = compare_on_demo(
        tiny_model_dir,
        Variant(name="base"),
        Variant(name="cand", adapter_dir=adapter),
        tmp_path / "report",
        items=items(),
        policy=GatePolicy(min_holdout_items=1, min_judge_win_rate=0.5),
        max_new_tokens=4,
        judge=JudgeConfig(kind="local"),
    )
    pairwise = payload["pairwise"]
    assert pairwise["judge"].startswith("local:")
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["pairwise"] == pairwise
    assert "## pairwise judge" in (tmp_path / "report" / "report.md").read_text()
    # The error analysis: a column per variant over the 4 hold-out items, in JSON and Markdown.
    errors = saved["error_analysis"]
    assert [(c["label"], c["variant"]) for c in errors["columns"]] == [
        ("base", "base"),
        ("candidate", "cand"),
    ]
    assert errors["items"] == 4
    assert errors["max_new_tokens"] == 4
    assert (
        "## error analysis (hold-out, 4 items)" in (tmp_path / "report" / "report.md").read_text()
    )
    if not pairwise["measured"]:
        # A required criterion that could not be measured rejects the candidate.
        assert not payload["decision"]["promote"]
        assert any("not measured" in r for r in payload["decision"]["reasons"])

    unjudged = compare_on_demo(
        tiny_model_dir,
        Variant(name="base"),
        Variant(name="cand", adapter_dir=adapter),
        tmp_path / "report-off",
        items=items(),
        max_new_tokens=4,
        not_judged="judging switched off",
    )
    assert unjudged["pairwise"] == {"measured": False, "reason": "judging switched off"}
