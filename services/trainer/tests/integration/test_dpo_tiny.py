"""The DPO stage on the tiny in-process Llama: the policy moves toward the chosen answers.

The oracle is our own sum of token log-probabilities under the policy (not TRL's metrics): the
margin, chosen minus rejected, on the training pairs must be higher after the stage than before.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from raftloop_trainer.builder import write_examples
from raftloop_trainer.dpo import pair_texts
from raftloop_trainer.preference import PreferencePair, build_pairs, write_pairs
from raftloop_trainer.raft import Chunk, RaftSource, build_example, example_rng
from raftloop_trainer.train import DpoParams, LoraParams, TrainConfig, train

pytestmark = pytest.mark.integration

FACTS = [
    ("Refunds are issued within five business days.", "How long do refunds take?", "Five days."),
    ("Support is open Monday to Friday.", "When is support open?", "Monday to Friday."),
    ("Reset your password from the account page.", "How do I reset it?", "The account page."),
    ("The Pro plan costs ten dollars a month.", "What does Pro cost?", "Ten dollars."),
]
WRONG = ["About a month.", "Every day.", "Call us.", "It is free."]
LORA = LoraParams(max_length=256, max_steps=2, batch_size=2, warmup_steps=0, learning_rate=1e-2)


def job_files(folder: Path) -> tuple[Path, Path, list[PreferencePair]]:
    """The SFT examples of the facts, and a pair per fact (the reviewer's fix over a wrong one)."""
    sources, built = [], []
    for i, (text, question, answer) in enumerate(FACTS):
        source = RaftSource(f"ex-{i}", question, answer, (Chunk(f"c{i}", text),))
        other = Chunk("d", FACTS[(i + 1) % len(FACTS)][0])
        sources.append(source)
        built.append(build_example(source, [other], rng=example_rng(0, source.example_id)))
    rows = {
        f"ex-{i}": {"rejected_answer": wrong, "interaction_id": f"i{i}", "review_id": f"r{i}"}
        for i, wrong in enumerate(WRONG)
    }
    pairs = build_pairs(built, sources, rows)
    examples = write_examples(folder / "train.jsonl", built)
    return examples, write_pairs(folder / "pairs.jsonl", pairs), pairs


def margin(model_dir: Path, adapter: Path | None, pairs: list[PreferencePair]) -> float:
    """Mean over pairs of sum log p(chosen | prompt) - sum log p(rejected | prompt)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    total = 0.0
    with torch.no_grad():
        for pair in pairs:
            row, _ = pair_texts(tokenizer, pair, LORA.max_length)
            prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
            for sign, side in ((1.0, "chosen"), (-1.0, "rejected")):
                completion = tokenizer(row[side], add_special_tokens=False)["input_ids"]
                ids = torch.tensor([prompt + completion])
                logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
                picked = logits.log_softmax(-1).gather(1, torch.tensor(completion)[:, None])
                total += sign * float(picked.sum())
    return total / len(pairs)


def config(
    folder: Path, model_dir: Path, recipe: str, *, min_pairs: int = 2
) -> tuple[TrainConfig, list[PreferencePair]]:
    examples, pairs_path, pairs = job_files(folder)
    cfg = TrainConfig.model_validate(
        {
            "base_model_dir": model_dir,
            "examples_path": examples,
            "output_dir": folder / "job",
            "params": LORA,
            "device": "cpu",
            "recipe": recipe,
            "pairs_path": pairs_path,
            "dpo": DpoParams(max_steps=6, batch_size=2, learning_rate=5e-3, beta=0.1),
            "min_pairs": min_pairs,
        }
    )
    return cfg, pairs


def test_dpo_from_the_base_raises_the_chosen_minus_rejected_margin(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    cfg, pairs = config(tmp_path, tiny_model_dir, "dpo")
    before = margin(tiny_model_dir, None, pairs)
    adapter = train(cfg)
    after = margin(tiny_model_dir, adapter, pairs)
    assert after > before, (before, after)
    stages = json.loads((cfg.output_dir / "stages.json").read_text())
    assert stages["dpo"]["state"] == "done"
    assert (stages["dpo"]["pairs"], stages["dpo"]["steps"], stages["dpo"]["from"]) == (4, 6, "base")
    progress = json.loads((cfg.output_dir / "progress.json").read_text())
    assert (progress["stage"], progress["step"]) == ("dpo", 6)
    assert (adapter / "adapter_model.safetensors").is_file()


def test_sft_then_dpo_continues_from_the_sft_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg, pairs = config(tmp_path, tiny_model_dir, "sft+dpo")
    adapter = train(cfg)
    sft = cfg.output_dir / "sft-adapter"
    assert (sft / "adapter_model.safetensors").is_file()
    # The SFT adapter is the reference DPO starts from; the stage moves past it.
    assert margin(tiny_model_dir, adapter, pairs) > margin(tiny_model_dir, sft, pairs)
    stages = json.loads((cfg.output_dir / "stages.json").read_text())
    assert (stages["sft"]["state"], stages["dpo"]["from"]) == ("done", "sft")
    # Only the trained adapter is saved, not TRL's frozen reference copy of the SFT adapter.
    assert not (adapter / "ref").exists()


def test_too_few_pairs_skip_the_dpo_stage_and_keep_the_sft_adapter(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    cfg, _ = config(tmp_path, tiny_model_dir, "sft+dpo", min_pairs=5)
    adapter = train(cfg)
    stages = json.loads((cfg.output_dir / "stages.json").read_text())
    assert stages["dpo"]["state"] == "skipped"
    assert "4 preference pairs, fewer than the 5" in stages["dpo"]["reason"]
    sft = cfg.output_dir / "sft-adapter" / "adapter_model.safetensors"
    assert (adapter / "adapter_model.safetensors").read_bytes() == sft.read_bytes()
    only_dpo, _ = config(tmp_path / "dpo", tiny_model_dir, "dpo", min_pairs=5)
    with pytest.raises(ValueError, match="recipe dpo has nothing to train"):
        train(only_dpo)


def test_a_stopped_dpo_stage_resumes_from_its_last_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    cfg, _ = config(tmp_path, tiny_model_dir, "dpo")
    cfg = cfg.model_copy(update={"dpo": DpoParams(max_steps=4, save_steps=2, batch_size=2)})
    adapter = train(cfg)
    checkpoints = cfg.output_dir / "dpo-checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    # As if the job had been killed after step 3: no adapter, no summary, the last save at 2.
    shutil.rmtree(adapter)
    shutil.rmtree(checkpoints / "checkpoint-4")
    (cfg.output_dir / "stages.json").unlink()
    train(cfg)
    progress = json.loads((cfg.output_dir / "progress.json").read_text())
    assert str(progress["resumed_from"]).endswith("checkpoint-2")
    assert (progress["stage"], progress["step"]) == ("dpo", 4)
    stages = json.loads((cfg.output_dir / "stages.json").read_text())
    assert str(stages["dpo"]["resumed_from"]).endswith("checkpoint-2")
    assert (adapter / "adapter_model.safetensors").is_file()
