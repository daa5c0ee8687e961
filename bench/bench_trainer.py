"""Training throughput: the trainer's path (transformers Trainer + peft, as the job runs it) vs a
bare transformers+peft loop on the same RAFT examples, with the same LoRA settings."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

TITLE = "Trainer throughput: RAFT LoRA job vs bare transformers+peft loop (SmolLM2, CPU)"
EXAMPLES = 8
BATCH = 2


def _bare_loop(model_dir: Path, examples: Path, params: object) -> tuple[float, int]:
    import torch

    from raftloop_trainer.encoding import encode_example, pad_batch
    from raftloop_trainer.train import load_examples, load_model, lora_model

    torch.manual_seed(0)
    tokenizer, model = load_model(model_dir, "cpu")
    model = lora_model(model, params)  # type: ignore[arg-type]
    model.train()
    data = [encode_example(tokenizer, m, max_length=384) for m in load_examples(examples)]
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    start = time.perf_counter()
    for i in range(0, len(data), BATCH):
        batch = pad_batch(data[i : i + BATCH], tokenizer.pad_token_id)
        model(**batch).loss.backward()
        optim.step()
        optim.zero_grad()
    return time.perf_counter() - start, sum(len(d["input_ids"]) for d in data)


def run() -> dict[str, float | int | str]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from raftloop_models import ensure_smollm2

    from raftloop_trainer.builder import build_set, demo_sources, write_examples
    from raftloop_trainer.distractors import LocalDistractorSource
    from raftloop_trainer.train import LoraParams, TrainConfig, train

    model_dir = ensure_smollm2()
    params = LoraParams(
        epochs=1, batch_size=BATCH, top_layers=8, max_length=384, warmup_steps=0, save_steps=1000
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = demo_sources("train")[:EXAMPLES]
        built = build_set(sources, LocalDistractorSource.from_demo_kb(), k=1, p_oracle=0.8, seed=1)
        examples = write_examples(root / "train.jsonl", built)
        bare_s, tokens = _bare_loop(model_dir, examples, params)
        config = TrainConfig(
            base_model_dir=model_dir,
            examples_path=examples,
            output_dir=root / "job",
            params=params,
            device="cpu",
        )
        train(config)
        progress = json.loads((root / "job" / "progress.json").read_text())
    ours_s = float(progress["train_runtime_s"])
    ours_tps = progress["tokens_per_epoch"] / ours_s
    bare_tps = tokens / bare_s
    return {
        "examples": EXAMPLES,
        "tokens": tokens,
        "trainer_tokens_per_s": round(ours_tps, 1),
        "bare_loop_tokens_per_s": round(bare_tps, 1),
        "ratio": round(ours_tps / bare_tps, 3),
        "target": "trainer path >= 90% of the bare loop's tokens/s",
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
