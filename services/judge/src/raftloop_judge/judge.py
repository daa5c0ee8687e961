"""One judgement of one interaction: every evaluator, combined, hardened and calibrated."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from raftloop_core.events import CriterionScore, Flag, Interaction, Judgement
from raftloop_judge import domain
from raftloop_judge.evaluators import JudgeFailed, RubricJudge
from raftloop_judge.injection import injection_flag
from raftloop_judge.reference import Embedded, ReferenceEvaluator, Texts
from raftloop_judge.rubrics import Rubric

Calibrate = Callable[[dict[str, float]], float | None]


def texts_of(interaction: Interaction) -> Texts:
    """What the reference evaluators embed of an interaction."""
    return Texts.of(
        interaction.question, interaction.answer, [c.text for c in interaction.retrieved]
    )


class Judge:
    """Runs the LLM rubric judge and the reference evaluators on one interaction."""

    def __init__(
        self,
        rubric_judge: RubricJudge,
        reference: ReferenceEvaluator,
        rubrics: Sequence[Rubric],
        *,
        version: str,
        pass_threshold: float = 3.0,
    ) -> None:
        self.rubric_judge = rubric_judge
        self.reference = reference
        self.rubrics = list(rubrics)
        self.version = version
        self.pass_threshold = pass_threshold
        self.weights = {r.name: r.weight for r in self.rubrics}

    @property
    def criteria(self) -> list[str]:
        """The LLM criteria, in order."""
        return [r.name for r in self.rubrics]

    async def embed(self, tenant: str, interaction: Interaction) -> Embedded:
        """One interaction's embeddings on their own (a batch embeds all of its at once)."""
        [embedded] = await self.reference.embed_many([(tenant, texts_of(interaction))])
        return embedded

    async def _reference_scores(self, embedded: Awaitable[Embedded]) -> list[CriterionScore]:
        return self.reference.score(await embedded)

    async def judge(
        self,
        interaction: Interaction,
        embedded: Awaitable[Embedded],
        calibrate: Calibrate | None = None,
    ) -> Judgement:
        """Score every criterion; a failed LLM criterion makes the judgement an error, unscored.

        `embedded` (the reference evaluators' vectors) may still be computing: the LLM requests
        go out first, so the endpoint works while the batch is embedded.
        """
        question, answer = interaction.question, interaction.answer
        chunks = [c.text for c in interaction.retrieved]
        flags: list[Flag] = [f for f in [injection_flag(answer)] if f is not None]
        applicable = [r for r in self.rubrics if chunks or not r.needs_context]
        llm = asyncio.gather(
            *(
                self.rubric_judge.score(r, question=question, answer=answer, context=chunks)
                for r in applicable
            )
        )
        try:
            llm_scores, ref_scores = await asyncio.gather(llm, self._reference_scores(embedded))
        except JudgeFailed as exc:
            return Judgement(judge_version=self.version, error=str(exc), flags=flags)
        scores: list[CriterionScore] = [*llm_scores, *ref_scores]
        weights = {r.name: r.weight for r in applicable}
        overall = domain.overall_score(scores, weights)
        unc = domain.uncertainty(scores, weights)
        feats = domain.features(scores, overall, unc, bool(flags), self.criteria)
        return Judgement(
            judge_version=self.version,
            scores=scores,
            overall=round(overall, 4),
            uncertainty=round(unc, 4),
            approval_probability=calibrate(feats) if calibrate else None,
            rationale=_rationale(llm_scores, overall, flags),
            flags=flags,
        )


def _rationale(scores: Sequence[CriterionScore], overall: float, flags: Sequence[Flag]) -> str:
    """One short line: the weakest criterion and why, plus any flag."""
    weakest = min(scores, key=lambda s: s.score)
    text = f"overall {overall:.2f}; weakest {weakest.criterion} {weakest.score:.2f}"
    if weakest.rationale:
        text += f": {weakest.rationale}"
    if flags:
        text += f" [flagged: {', '.join(f.code for f in flags)}]"
    return text[:400]
