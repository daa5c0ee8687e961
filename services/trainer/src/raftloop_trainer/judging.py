"""The judge models behind the gate's pairwise win rate, used inside the evaluation job.

Either an OpenAI-compatible endpoint (`TRAINER_JUDGE_URL`, through the official `openai` client),
or, with none configured, the base model the evaluation job has already loaded, reading the
verdict token's probabilities in one forward pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from raftloop_core.pairwise import (
    VERDICT_PREFIX,
    Completion,
    InvalidVerdict,
    TokenTop,
    combine,
    pairwise_messages,
    preference_a,
    preference_from_labels,
)
from raftloop_trainer.encoding import render_prompt

log = logging.getLogger("raftloop_trainer.judging")

TOP_LOGPROBS = 10


class JudgeConfig(BaseModel):
    """Which model judges the pairs, and how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["local", "endpoint"]
    url: str | None = Field(default=None, description="OpenAI-compatible base URL (…/v1).")
    model: str | None = Field(default=None, description="Default: the endpoint's first model.")
    max_tokens: int = Field(
        default=24, ge=4, description="An endpoint's reply length; the verdict comes first."
    )
    concurrency: int = Field(default=4, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)

    def label(self, base_model: str) -> str:
        """Who judged, for the report."""
        if self.kind == "local":
            return f"local:{base_model}"
        return f"endpoint:{self.model or 'first listed model'}@{self.url}"


class JudgeModel(Protocol):
    """Reads P(answer A is better) for many chats; a failure yields its error text instead."""

    def preferences(self, chats: Sequence[list[dict[str, str]]]) -> list[float | str]:
        """One preference (or error text) per chat, in order."""
        ...


class LocalJudgeModel:
    """The evaluation job's own model as the judge.

    Its reply is started with the verdict prefix (`{"winner": "`), so one forward pass gives
    the probabilities of A, B and tie as the next token: no decoding, no format to miss.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.labels = {label: self._first_tokens(label) for label in ("A", "B", "tie")}

    def _first_tokens(self, label: str) -> list[int]:
        ids = set()
        for text in (label, f" {label}"):
            encoded = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if encoded:
                ids.add(int(encoded[0]))
        return sorted(ids)

    def preferences(self, chats: Sequence[list[dict[str, str]]]) -> list[float | str]:
        """P(A better) per chat from the next-token distribution after the verdict prefix."""
        out: list[float | str] = []
        for start in range(0, len(chats), self.batch_size):
            out += self._batch(chats[start : start + self.batch_size])
        return out

    def _batch(self, chats: Sequence[list[dict[str, str]]]) -> list[float | str]:
        import torch

        tok = self.tokenizer
        tok.padding_side = "left"
        prompts = [render_prompt(tok, chat) + VERDICT_PREFIX for chat in chats]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        with torch.inference_mode():
            logits = self.model(**enc).logits[:, -1, :].float()
        probs = torch.softmax(logits, dim=-1)
        out: list[float | str] = []
        for row in probs:
            mass = {k: float(row[ids].sum()) for k, ids in self.labels.items()}
            try:
                out.append(preference_from_labels(mass["A"], mass["B"], mass["tie"]))
            except InvalidVerdict as exc:
                out.append(str(exc))
        return out


class EndpointJudgeModel:
    """An OpenAI-compatible endpoint as the judge, through the official client."""

    def __init__(self, config: JudgeConfig, api_key: str) -> None:
        if not config.url:
            raise ValueError("an endpoint judge needs a URL; set TRAINER_JUDGE_URL")
        self.config = config
        self.api_key = api_key

    def preferences(self, chats: Sequence[list[dict[str, str]]]) -> list[float | str]:
        """P(A better) per chat, read from the reply (logprobs when given, else its JSON)."""
        out: list[float | str] = []
        for reply in asyncio.run(self._all(chats)):
            try:
                out.append(reply if isinstance(reply, str) else preference_a(reply))
            except InvalidVerdict as exc:
                out.append(str(exc))
        return out

    async def _all(self, chats: Sequence[list[dict[str, str]]]) -> list[Completion | str]:
        import openai

        client = openai.AsyncOpenAI(
            base_url=self.config.url, api_key=self.api_key, timeout=self.config.timeout_s
        )
        async with client:
            model = self.config.model
            if not model:
                try:
                    listed = (await client.models.list()).data
                except openai.OpenAIError as exc:
                    return [f"listing the judge's models failed: {exc}"[:300]] * len(chats)
                if not listed:
                    return [f"the judge endpoint {self.config.url} lists no models"] * len(chats)
                model = listed[0].id
            limit = asyncio.Semaphore(self.config.concurrency)

            async def one(chat: list[dict[str, str]]) -> Completion | str:
                async with limit:
                    try:
                        response = await client.chat.completions.create(
                            model=model,
                            messages=chat,  # type: ignore[arg-type]
                            max_tokens=self.config.max_tokens,
                            temperature=0.0,
                            logprobs=True,
                            top_logprobs=TOP_LOGPROBS,
                        )
                    except openai.OpenAIError as exc:
                        return f"{type(exc).__name__}: {str(exc)[:300]}"
                if not response.choices:
                    return "the endpoint returned no choices"
                choice = response.choices[0]
                content = choice.logprobs.content if choice.logprobs else None
                tokens = [
                    TokenTop(t.token, {a.token: a.logprob for a in t.top_logprobs or []})
                    for t in content or []
                ]
                return Completion(choice.message.content or "", tokens or None)

            return list(await asyncio.gather(*(one(chat) for chat in chats)))


def judge_pairs(
    judge: JudgeModel,
    questions: Sequence[str],
    references: Sequence[str | None],
    candidate: Sequence[str],
    baseline: Sequence[str],
) -> list[dict[str, Any]]:
    """Judge candidate vs baseline answers item by item, in both orders.

    Returns one record per item: the verdict's fields, or `error` when the judge gave none.
    """
    chats: list[list[dict[str, str]]] = []
    for q, ref, cand, base in zip(questions, references, candidate, baseline, strict=True):
        chats += [pairwise_messages(q, cand, base, ref), pairwise_messages(q, base, cand, ref)]
    prefs = judge.preferences(chats)
    records: list[dict[str, Any]] = []
    for first, second in zip(prefs[::2], prefs[1::2], strict=True):
        if isinstance(first, str) or isinstance(second, str):
            records.append({"error": first if isinstance(first, str) else second})
            continue
        # Candidate as A, then as B: P(candidate better) is `first` and `1 - second`.
        records.append(combine(first, 1.0 - second).as_dict())
    return records
