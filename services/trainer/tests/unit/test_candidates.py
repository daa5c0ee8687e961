"""Which adapters of a training job the gate compares."""

from __future__ import annotations

from pathlib import Path

from raftloop_trainer.runner import job_candidates


def adapter(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    return folder


def test_sft_dpo_with_its_dpo_stage_done_offers_the_sft_adapter_too(tmp_path: Path) -> None:
    final, sft = adapter(tmp_path / "adapter"), adapter(tmp_path / "sft-adapter")
    done = {"recipe": "sft+dpo", "dpo": {"state": "done"}}
    assert job_candidates(tmp_path, "sft+dpo", done) == [("sft+dpo", final), ("sft", sft)]


def test_a_skipped_dpo_stage_or_an_sft_recipe_is_one_candidate(tmp_path: Path) -> None:
    final = adapter(tmp_path / "adapter")
    adapter(tmp_path / "sft-adapter")
    skipped = {"recipe": "sft+dpo", "dpo": {"state": "skipped"}}
    assert job_candidates(tmp_path, "sft+dpo", skipped) == [("sft+dpo", final)]
    assert job_candidates(tmp_path, "sft", None) == [("sft", final)]


def test_a_searched_adapter_is_a_candidate_of_any_recipe(tmp_path: Path) -> None:
    final, tuned = adapter(tmp_path / "adapter"), adapter(tmp_path / "hpo-adapter")
    assert job_candidates(tmp_path, "sft", None) == [("sft", final), ("sft (tuned)", tuned)]
