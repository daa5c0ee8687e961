"""LoRA training on the tiny in-process Llama: weights change; a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from raftloop_trainer.builder import write_examples
from raftloop_trainer.domain import dataset_version
from raftloop_trainer.raft import Chunk, RaftSource, build_example, example_rng
from raftloop_trainer.train import LoraParams, TrainConfig, train

pytestmark = pytest.mark.integration

FACTS = [
    ("Refunds are issued within five business days.", "How long do refunds take?", "Five days."),
    ("Support is open Monday to Friday.", "When is support open?", "Monday to Friday."),
    ("Reset your password from the account page.", "How do I reset it?", "The account page."),
]


def examples_file(path: Path, copies: int) -> Path:
    built = []
    for i in range(copies):
        text, question, answer = FACTS[i % len(FACTS)]
        source = RaftSource(f"ex-{i}", question, answer, (Chunk(f"c{i}", text),))
        other = Chunk("d", FACTS[(i + 1) % len(FACTS)][0])
        built.append(build_example(source, [other], rng=example_rng(0, source.example_id)))
    return write_examples(path, built)


def test_two_steps_change_the_lora_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        base_model_dir=tiny_model_dir,
        examples_path=examples_file(tmp_path / "train.jsonl", 8),
        output_dir=tmp_path / "job",
        params=LoraParams(max_steps=2, batch_size=2, warmup_steps=0, learning_rate=1e-2),
        device="cpu",
    )
    adapter = train(config)
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b, sorted(weights)
    # peft initialises every B matrix to zero; two optimiser steps must have moved them.
    assert all(v.abs().sum() > 0 for v in lora_b.values())
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
    progress = json.loads((tmp_path / "job" / "progress.json").read_text())
    assert progress["step"] == 2
    assert progress["state"] == "done"


def _checkpoints(job: Path) -> list[int]:
    folder = job / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*"))


def test_kill_9_then_resume_from_the_last_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    examples = examples_file(tmp_path / "train.jsonl", 64)
    version = dataset_version([{"line": line} for line in examples.read_text().splitlines()])
    job = tmp_path / "job"
    config = TrainConfig(
        base_model_dir=tiny_model_dir,
        examples_path=examples,
        output_dir=job,
        params=LoraParams(max_steps=60, batch_size=2, save_steps=10, warmup_steps=0),
        device="cpu",
    )
    job.mkdir()
    (job / "train_config.json").write_text(config.model_dump_json())
    cmd = [
        sys.executable,
        "-m",
        "raftloop_trainer.train",
        "--config",
        str(job / "train_config.json"),
    ]
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    log = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not _checkpoints(job):
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    time.sleep(0.3)  # let the checkpoint finish writing before the kill
    first.send_signal(signal.SIGKILL)
    first.wait()
    log.close()
    assert first.returncode == -signal.SIGKILL
    left = _checkpoints(job)
    assert max(left) < 60
    assert not (job / "adapter").exists()

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    progress = json.loads((job / "progress.json").read_text())
    resumed = progress["resumed_from"]
    assert resumed is not None, "the second start began from scratch"
    assert int(resumed.rsplit("-", 1)[1]) in left
    assert progress["step"] == 60
    assert (job / "adapter" / "adapter_model.safetensors").is_file()
    # The examples the resumed run trained on are the same dataset version.
    assert (
        dataset_version([{"line": line} for line in examples.read_text().splitlines()]) == version
    )
