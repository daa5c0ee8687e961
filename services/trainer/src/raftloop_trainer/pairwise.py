"""The gate's pairwise win rate: the judged pairs' verdicts as one figure with a bootstrap CI.

The prompt, reading a verdict and the position swap are `raftloop_core.pairwise`; this module
only aggregates its `PairVerdict`s (numpy, which the trainer has and the core lib does not need).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from raftloop_core.pairwise import PairVerdict

OUTCOME_SCORE: dict[str, float] = {"candidate": 1.0, "tie": 0.5, "baseline": 0.0}


@dataclass(frozen=True)
class WinRate:
    """The candidate's pairwise win rate (a tie counts half) with a bootstrap CI."""

    rate: float
    low: float
    high: float
    wins: int
    losses: int
    ties: int
    inconsistent: int
    unjudged: int

    @property
    def n(self) -> int:
        """Items with a verdict."""
        return self.wins + self.losses + self.ties

    def as_dict(self) -> dict[str, float | int]:
        """Plain values for reports."""
        return {
            "win_rate": self.rate,
            "ci_low": self.low,
            "ci_high": self.high,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "inconsistent": self.inconsistent,
            "unjudged": self.unjudged,
            "n": self.n,
        }


def win_rate(
    verdicts: Sequence[PairVerdict | None],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> WinRate:
    """Mean of 1 (candidate wins), 0.5 (tie), 0 (baseline wins) over the judged items.

    Items without a verdict (`None`) are counted as unjudged and left out, never guessed. The CI
    is the percentile interval of the mean, resampling the judged items with replacement.

    Raises:
        ValueError: no item has a verdict.
    """
    judged = [v for v in verdicts if v is not None]
    if not judged:
        raise ValueError(f"none of the {len(verdicts)} pairs got a usable verdict")
    scores = np.asarray([OUTCOME_SCORE[v.outcome] for v in judged], dtype=float)
    rng = np.random.default_rng(seed)
    means = scores[rng.integers(0, len(scores), size=(resamples, len(scores)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return WinRate(
        rate=float(scores.mean()),
        low=float(low),
        high=float(high),
        wins=sum(v.outcome == "candidate" for v in judged),
        losses=sum(v.outcome == "baseline" for v in judged),
        ties=sum(v.outcome == "tie" for v in judged),
        inconsistent=sum(not v.consistent for v in judged),
        unjudged=len(verdicts) - len(judged),
    )
