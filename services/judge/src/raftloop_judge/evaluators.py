"""The LLM rubric judge and the bounded endpoint that every request to the judge model shares."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import openai

from raftloop_core.events import CriterionScore
from raftloop_core.pairwise import Completion
from raftloop_judge.backpressure import AdaptiveLimit, EndpointStalled
from raftloop_judge.domain import ChatEndpoint
from raftloop_judge.prompts import nonce_for, rubric_messages
from raftloop_judge.rubrics import Rubric
from raftloop_judge.scoring import InvalidOutput, rubric_score


class JudgeFailed(Exception):
    """The judge model gave no usable verdict after every attempt: recorded, never guessed."""


@dataclass(frozen=True)
class CallOptions:
    """How each request to the judge endpoint is made."""

    max_tokens: int = 48
    top_logprobs: int = 10
    attempts: int = 3
    min_first_mass: float = 0.02


class LimitedEndpoint:
    """The endpoint behind an adaptive limit shared by every evaluator.

    A slow answer is waited for; a 429 shrinks the limit and is retried after its Retry-After
    without counting as a failure (`raftloop_judge.backpressure`). Only a request unanswered
    within `stall_timeout_s` (the client's timeout, `JUDGE_STALL_TIMEOUT_S`), or refused with
    429 for that long, raises `EndpointStalled`.
    """

    def __init__(
        self, endpoint: ChatEndpoint, concurrency: int, *, stall_timeout_s: float = 600.0
    ) -> None:
        self.endpoint = endpoint
        self.limit = AdaptiveLimit(concurrency)
        self.stall_timeout_s = stall_timeout_s

    async def ask(
        self, messages: list[dict[str, str]], options: CallOptions, attempt: int
    ) -> Completion:
        """One request; greedy first, then sampled so a retry can differ.

        Raises:
            JudgeFailed: the endpoint refused this request for good (HTTP 400/413/422).
            EndpointStalled: no answer within the stall timeout.
        """
        first, busy = time.monotonic(), 0
        while True:
            async with self.limit.slot():
                try:
                    completion = await self.endpoint.complete(
                        messages,
                        max_tokens=options.max_tokens,
                        temperature=0.0 if attempt == 0 else 0.7,
                        top_logprobs=options.top_logprobs,
                        seed=attempt,
                    )
                except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                    raise JudgeFailed(f"endpoint refused the request: {exc}") from exc
                except openai.APITimeoutError as exc:
                    await self.limit.overloaded()
                    raise EndpointStalled(
                        f"the judge endpoint gave no answer within {self.stall_timeout_s:g}s "
                        "(JUDGE_STALL_TIMEOUT_S); the interaction will be judged again"
                    ) from exc
                except openai.RateLimitError as exc:
                    wait = _retry_after(exc) or min(30.0, 2.0**busy) * random.uniform(0.5, 1.0)
                else:
                    await self.limit.succeeded()
                    return completion
            await self.limit.overloaded()
            if time.monotonic() - first + wait > self.stall_timeout_s:
                raise EndpointStalled(
                    f"the judge endpoint answered 429 for {self.stall_timeout_s:g}s "
                    "(JUDGE_STALL_TIMEOUT_S); the interaction will be judged again"
                )
            await asyncio.sleep(wait)
            busy += 1


def _retry_after(exc: openai.RateLimitError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class RubricJudge:
    """Scores one criterion with the LLM: G-Eval from logprobs, else parsed JSON."""

    def __init__(self, endpoint: LimitedEndpoint, options: CallOptions, version: str) -> None:
        self.endpoint = endpoint
        self.options = options
        self.version = version

    async def score(
        self, rubric: Rubric, *, question: str, answer: str, context: list[str]
    ) -> CriterionScore:
        """The score of `answer` on `rubric`.

        Raises:
            JudgeFailed: every attempt returned unusable output.
        """
        nonce = nonce_for(self.version, rubric.name)
        messages = rubric_messages(
            rubric, question=question, answer=answer, context=context, nonce=nonce
        )
        errors: list[str] = []
        for attempt in range(self.options.attempts):
            completion = await self.endpoint.ask(messages, self.options, attempt)
            try:
                score, spread, rationale, method = rubric_score(
                    completion, self.options.min_first_mass
                )
            except InvalidOutput as exc:
                errors.append(str(exc))
                continue
            return CriterionScore(
                criterion=rubric.name,
                score=round(score, 4),
                spread=None if spread is None else round(spread, 4),
                rationale=rationale[:300] or None,
                evaluator=f"llm-{method}",
            )
        raise JudgeFailed(
            f"{rubric.name}: no valid score after {self.options.attempts} attempts "
            f"(last: {errors[-1] if errors else 'none'})"
        )
