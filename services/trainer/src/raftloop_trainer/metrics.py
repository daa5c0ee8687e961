"""Answer-quality metrics and paired bootstrap confidence intervals.

Token F1 and exact match follow the SQuAD evaluation script (lower-case, strip punctuation and
articles, collapse whitespace). ROUGE-L comes from Google's `rouge-score`; BLEU is sacrebleu's
sentence BLEU (exponential smoothing), scaled to 0..1.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

METRICS = ("token_f1", "exact_match", "rouge_l", "bleu")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall after normalisation."""
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred)
    recall = same / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


@cache
def _rouge() -> Any:
    from rouge_score import rouge_scorer  # type: ignore[import-untyped]

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence), with stemming."""
    return float(_rouge().score(reference, prediction)["rougeL"].fmeasure)


def bleu(prediction: str, reference: str) -> float:
    """Sentence BLEU in 0..1 (sacrebleu, exponential smoothing)."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(prediction, [reference]).score / 100.0)


def score_all(prediction: str, reference: str) -> dict[str, float]:
    """Every metric of one prediction."""
    return {
        "token_f1": token_f1(prediction, reference),
        "exact_match": exact_match(prediction, reference),
        "rouge_l": rouge_l(prediction, reference),
        "bleu": bleu(prediction, reference),
    }


@dataclass(frozen=True)
class PairedDiff:
    """Candidate minus baseline on the same items, with a bootstrap confidence interval."""

    metric: str
    baseline: float
    candidate: float
    diff: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain values for reports."""
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "diff": self.diff,
            "ci_low": self.low,
            "ci_high": self.high,
            "n": self.n,
        }


def paired_bootstrap(
    metric: str,
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDiff:
    """Percentile CI of mean(candidate - baseline), resampling items with replacement.

    Raises:
        ValueError: the two score lists differ in length or are empty.
    """
    if len(baseline) != len(candidate) or not baseline:
        raise ValueError(
            f"paired bootstrap needs two equally long, non-empty score lists "
            f"(got {len(baseline)} and {len(candidate)})"
        )
    base = np.asarray(baseline, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    diffs = cand - base
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return PairedDiff(
        metric=metric,
        baseline=float(base.mean()),
        candidate=float(cand.mean()),
        diff=float(diffs.mean()),
        low=float(low),
        high=float(high),
        n=len(diffs),
    )
