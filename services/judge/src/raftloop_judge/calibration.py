"""Calibration against reviewers: agreement (accuracy, Cohen's kappa) and an approval model."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from raftloop_judge.domain import LabelRecord


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """Cohen's kappa of two binary raters (None with no items; 0 when chance explains all)."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1 - expected)


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None without both classes."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _pairs(labels: Sequence[LabelRecord], criterion: str) -> tuple[list[bool], list[bool]]:
    judge, human = [], []
    for label in labels:
        truth = label.approved if criterion == "overall" else label.reviewer_pass.get(criterion)
        if truth is None or criterion not in label.judge_pass:
            continue
        judge.append(label.judge_pass[criterion])
        human.append(truth)
    return judge, human


def _figures(labels: Sequence[LabelRecord]) -> dict[str, dict[str, float | int | None]]:
    criteria = sorted({c for label in labels for c in label.reviewer_pass} | {"overall"})
    out: dict[str, dict[str, float | int | None]] = {}
    for criterion in criteria:
        judge, human = _pairs(labels, criterion)
        if not judge:
            continue
        accuracy = sum(x == y for x, y in zip(judge, human, strict=True)) / len(judge)
        kappa = cohen_kappa(judge, human)
        out[criterion] = {
            "n": len(judge),
            "accuracy": round(accuracy, 4),
            "kappa": None if kappa is None else round(kappa, 4),
        }
    return out


def agreement(labels: Sequence[LabelRecord]) -> dict[str, object]:
    """Agreement per criterion, overall and per slice value, over the given window."""
    slices: dict[str, dict[str, object]] = {}
    for name in sorted({k for label in labels for k in label.slices}):
        values = sorted({label.slices[name] for label in labels if name in label.slices})
        slices[name] = {
            v: _figures([label for label in labels if label.slices.get(name) == v]) for v in values
        }
    return {"window": len(labels), "criteria": _figures(labels), "slices": slices}


@dataclass(frozen=True)
class Calibrator:
    """Standardised logistic regression over judge features, stored as plain JSON (no pickle)."""

    names: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    n: int

    def predict(self, features: dict[str, float]) -> float:
        """Probability that a reviewer approves."""
        x = np.asarray([features.get(n, 0.0) for n in self.names], dtype=float)
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = float(z @ np.asarray(self.coef)) + self.intercept
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, logit))))

    def to_json(self) -> str:
        """Serialise."""
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, payload: str) -> Calibrator:
        """Deserialise."""
        return cls(**json.loads(payload))


def fit_calibrator(labels: Sequence[LabelRecord], c: float = 1.0) -> Calibrator | None:
    """Fit on the labels' judge features; None until both outcomes have been seen."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    if len({label.approved for label in labels}) < 2:
        return None
    names = sorted({k for label in labels for k in label.features})
    x = np.asarray([[label.features.get(n, 0.0) for n in names] for label in labels], dtype=float)
    y = np.asarray([label.approved for label in labels], dtype=int)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=c, max_iter=1000).fit((x - mean) / scale, y)
    return Calibrator(
        names=names,
        mean=mean.tolist(),
        scale=scale.tolist(),
        coef=model.coef_[0].tolist(),
        intercept=float(model.intercept_[0]),
        n=len(labels),
    )
