"""Turning endpoint output into scores: G-Eval over logprobs, or validated structured output."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from raftloop_core.pairwise import Completion, TokenTop, label_of, label_position

SCORE_TOKENS = {str(i): i for i in range(1, 6)}
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


class InvalidOutput(ValueError):
    """The judge model's reply could not be turned into a score."""


class RubricReply(BaseModel):
    """The structured reply the rubric prompt asks for."""

    model_config = ConfigDict(extra="ignore")

    score: StrictInt = Field(ge=1, le=5)
    rationale: str = Field(default="", max_length=1000)


@dataclass(frozen=True)
class Distribution:
    """A probability distribution over labels, from the top logprobs at one position."""

    probs: dict[str, float]
    mass: float

    def mean(self) -> float:
        """Expected score over the 1-5 labels."""
        return sum(SCORE_TOKENS[k] * p for k, p in self.probs.items())

    def spread(self) -> float:
        """Standard deviation of the score."""
        mu = self.mean()
        return math.sqrt(sum(p * (SCORE_TOKENS[k] - mu) ** 2 for k, p in self.probs.items()))


MIN_FIRST_MASS = 0.02


def _normalise(candidates: Mapping[str, float], labels: set[str]) -> Distribution | None:
    probs: dict[str, float] = {}
    for text, logprob in candidates.items():
        label = label_of(text)
        if label in labels:
            probs[label] = probs.get(label, 0.0) + math.exp(logprob)
    mass = sum(probs.values())
    if mass <= 0:
        return None
    return Distribution({k: v / mass for k, v in probs.items()}, mass)


def distribution(
    tokens: Sequence[TokenTop], labels: set[str], after: str, min_first_mass: float = MIN_FIRST_MASS
) -> Distribution | None:
    """Normalised probabilities of `labels` where the verdict was given, merging variants (' 4').

    When the reply never states a label early, the distribution at the first generated position
    is used if the labels carry at least `min_first_mass` there (what the model would have
    answered had it answered at once); otherwise there is no distribution.
    """
    pos = label_position(tokens, labels, after)
    if pos is None:
        if not tokens:
            return None
        dist = _normalise(tokens[0].top, labels)
        return dist if dist is not None and dist.mass >= min_first_mass else None
    tok = tokens[pos]
    candidates = dict(tok.top)
    candidates.setdefault(tok.token, 0.0)  # the sampled token counts even if top omits it
    return _normalise(candidates, labels)


def parse_json(text: str) -> dict[str, object]:
    """The JSON object in a reply (code fences and surrounding prose tolerated).

    Raises:
        InvalidOutput: no JSON object could be read.
    """
    match = _JSON_OBJECT.search(text)
    if not match:
        raise InvalidOutput(f"no JSON object in the reply: {text[:120]!r}")
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise InvalidOutput(f"reply is not valid JSON ({exc.msg}): {text[:120]!r}") from exc
    if not isinstance(value, dict):
        raise InvalidOutput("reply JSON is not an object")
    return value


def rubric_score(
    completion: Completion, min_first_mass: float = MIN_FIRST_MASS
) -> tuple[float, float | None, str, str]:
    """(score, spread, rationale, method) from a rubric reply.

    With logprobs the score is probability-weighted over "1".."5" (G-Eval); otherwise the
    structured reply must validate.

    Raises:
        InvalidOutput: neither a score distribution nor a valid structured reply was found.
    """
    if completion.tokens:
        dist = distribution(completion.tokens, set(SCORE_TOKENS), "score", min_first_mass)
        if dist is None:
            raise InvalidOutput("no score token 1-5 among the generated tokens")
        try:
            rationale = RubricReply.model_validate(parse_json(completion.text)).rationale
        except (InvalidOutput, ValidationError):
            rationale = ""
        return dist.mean(), dist.spread(), rationale, "geval"
    try:
        reply = RubricReply.model_validate(parse_json(completion.text))
    except ValidationError as exc:
        raise InvalidOutput(f"reply does not match {{score: 1-5, rationale}}: {exc}") from exc
    return float(reply.score), None, reply.rationale, "parsed"
