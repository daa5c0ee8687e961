from __future__ import annotations

import pytest

from raftloop_trainer.metrics import (
    bleu,
    exact_match,
    normalize_answer,
    paired_bootstrap,
    rouge_l,
    token_f1,
)


def test_squad_normalisation() -> None:
    assert normalize_answer("The  Answer, is: 5 GB!") == "answer is 5 gb"


def test_token_f1_and_exact_match() -> None:
    assert token_f1("five business days", "Within five business days.") == pytest.approx(
        2 * 1.0 * 0.75 / 1.75
    )
    assert token_f1("nothing", "five days") == 0.0
    assert token_f1("", "") == 1.0
    assert exact_match("The Paris.", "paris") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0


def test_rouge_l_and_bleu_bounds() -> None:
    assert rouge_l("refunds take five days", "refunds take five days") == pytest.approx(1.0)
    assert rouge_l("cats", "dogs") == 0.0
    assert bleu("the refund takes five business days", "the refund takes five business days") == (
        pytest.approx(1.0)
    )
    assert 0.0 <= bleu("five days", "the refund takes five business days") < 0.5


def test_paired_bootstrap_finds_a_clear_gain() -> None:
    base = [0.1, 0.2, 0.0, 0.3, 0.1, 0.2, 0.1, 0.0, 0.2, 0.1]
    cand = [b + 0.5 for b in base]
    diff = paired_bootstrap("token_f1", base, cand)
    assert diff.diff == pytest.approx(0.5)
    assert diff.low == pytest.approx(0.5)
    assert diff.high == pytest.approx(0.5)


def test_paired_bootstrap_straddles_zero_for_noise() -> None:
    base = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.6, 0.4]
    cand = [0.4, 0.2, 0.8, 0.4, 0.6, 0.3, 0.7, 0.3]
    diff = paired_bootstrap("token_f1", base, cand, seed=1)
    assert diff.low < 0 < diff.high


def test_paired_bootstrap_rejects_unpaired_lists() -> None:
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap("bleu", [0.1], [0.1, 0.2])
