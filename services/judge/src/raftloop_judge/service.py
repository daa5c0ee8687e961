"""The judge's use cases: judge ingested interactions, learn from reviews, keep approved answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from raftloop_core.events import (
    ExampleCurated,
    InteractionIngested,
    InteractionJudged,
    Judgement,
    ReviewCompleted,
)
from raftloop_core.faults import crash_point
from raftloop_judge import domain
from raftloop_judge.calibration import Calibrator, agreement, fit_calibrator
from raftloop_judge.judge import Judge, texts_of
from raftloop_judge.reference import Approved, Embedded

log = logging.getLogger(__name__)

Publish = Callable[[InteractionJudged], Awaitable[None]]


@dataclass(frozen=True)
class CalibrationPolicy:
    """When the calibrator is refitted, and over how many labels agreement is computed."""

    window: int = 500
    min_labels: int = 20
    refit_every: int = 10


class JudgeService:
    """Exactly one published judgement per (interaction, revision, judge version)."""

    def __init__(
        self,
        judge: Judge,
        store: domain.JudgeStore,
        publish: Publish,
        policy: CalibrationPolicy | None = None,
    ) -> None:
        self.judge = judge
        self.store = store
        self.publish = publish
        self.policy = policy or CalibrationPolicy()
        saved = store.load_calibrator()
        self.calibrator = Calibrator.from_json(saved) if saved else None
        self._since_fit = 0
        self.judged = 0
        self.errors = 0

    def approval(self, features: dict[str, float]) -> float | None:
        """The calibrated approval probability, once a calibrator exists."""
        return round(self.calibrator.predict(features), 4) if self.calibrator else None

    async def handle(
        self,
        event: InteractionIngested,
        embedded: Callable[[], Coroutine[Any, Any, Embedded]] | None = None,
    ) -> InteractionJudged | None:
        """Judge one ingested interaction unless already done; publish the judgement.

        `embedded` gives its texts' vectors when a batch embedded them together.
        """
        if await asyncio.to_thread(self.store.is_processed, event.event_id):
            log.info(
                "redelivered ingested event skipped",
                extra={"event_id": str(event.event_id), "tenant": event.tenant},
            )
            return None
        interaction = event.interaction
        out_id = domain.output_event_id(
            interaction.interaction_id, event.revision, self.judge.version
        )
        out = await asyncio.to_thread(self.store.saved_judgement, out_id)
        if out is None:  # a judgement saved before a crash is republished unchanged
            vectors = embedded() if embedded else self.judge.embed(event.tenant, interaction)
            judgement = await self.judge.judge(interaction, vectors, self.approval)
            out = InteractionJudged(
                event_id=out_id,
                tenant=event.tenant,
                interaction=interaction,
                judgement=judgement,
                ingested_event_id=event.event_id,
                revision=event.revision,
            )
            await asyncio.to_thread(self.store.save_judgement, out)
            self.judged += 1
            self.errors += judgement.error is not None
        await self.publish(out)
        await asyncio.to_thread(self.store.mark_processed, event.event_id, out_id)
        crash_point("judge.after_write")  # fault tests: written, offset not yet committed
        return out

    async def handle_many(self, events: Sequence[InteractionIngested]) -> list[BaseException]:
        """Judge a batch concurrently; events of one interaction stay in order.

        The batch's texts are embedded in one call, while the LLM requests go out. Returns the
        failures (one per failed interaction); the others are done.
        """
        batch = asyncio.ensure_future(
            self.judge.reference.embed_many([(e.tenant, texts_of(e.interaction)) for e in events])
        )

        def embedded(i: int) -> Callable[[], Coroutine[Any, Any, Embedded]]:
            async def one() -> Embedded:
                return (await asyncio.shield(batch))[i]

            return one

        groups: dict[str, list[tuple[int, InteractionIngested]]] = {}
        for i, event in enumerate(events):
            groups.setdefault(str(event.interaction.interaction_id), []).append((i, event))

        async def in_order(group: list[tuple[int, InteractionIngested]]) -> None:
            for i, event in group:
                await self.handle(event, embedded(i))

        results = await asyncio.gather(
            *(in_order(g) for g in groups.values()), return_exceptions=True
        )
        await asyncio.gather(batch, return_exceptions=True)  # unused when all were done before
        return [r for r in results if isinstance(r, BaseException)]

    async def on_review(self, review: ReviewCompleted) -> bool:
        """Record a reviewer's verdict against the judgement; keep approved answers; refit."""
        if review.action == "skipped":
            return False
        judged = await asyncio.to_thread(self.store.latest_judgement, review.interaction_id)
        if judged is None:
            log.info(
                "review of an unjudged interaction ignored",
                extra={"interaction_id": str(review.interaction_id)},
            )
            return False
        if review.action in ("approved", "corrected"):
            answer = review.final_answer or judged.interaction.answer
            await self.keep_reference(
                str(review.review_id), review.tenant, judged.interaction.question, answer
            )
        label = self.label_for(review, judged)
        if label is None or not await asyncio.to_thread(self.store.add_label, label):
            return False
        self._since_fit += 1
        if self._since_fit >= self.policy.refit_every:
            await self.refit()
        return True

    def label_for(
        self, review: ReviewCompleted, judged: InteractionJudged
    ) -> domain.LabelRecord | None:
        """Join a review with the judgement it reviewed (None for judge errors)."""
        j = judged.judgement
        if j.overall is None or j.error:
            return None
        threshold = self.judge.pass_threshold
        interaction = judged.interaction
        return domain.LabelRecord(
            review_id=str(review.review_id),
            interaction_id=str(review.interaction_id),
            approved=review.action == "approved",
            features=self.judge_features(j),
            judge_pass=domain.judge_passes(j.scores, j.overall, threshold),
            reviewer_pass={c.criterion: c.passed for c in review.criterion_labels},
            slices={
                "tenant": review.tenant,
                "adapter": (interaction.adapter_id or "base")[:12],
                "retrieval": "with_context" if interaction.retrieved else "no_context",
            },
        )

    def judge_features(self, j: Judgement) -> dict[str, float]:
        """The calibrator's features of a stored judgement."""
        overall = j.overall if j.overall is not None else 0.0
        return domain.features(
            j.scores, overall, j.uncertainty or 0.0, bool(j.flags), self.judge.criteria
        )

    async def refit(self) -> Calibrator | None:
        """Refit the calibrator on the sliding window, once there are enough labels."""
        labels = await asyncio.to_thread(self.store.recent_labels, self.policy.window)
        if len(labels) < self.policy.min_labels:
            return None
        fitted = await asyncio.to_thread(fit_calibrator, labels)
        if fitted is not None:
            await asyncio.to_thread(self.store.save_calibrator, fitted.to_json())
            self.calibrator = fitted
            self._since_fit = 0
        return fitted

    async def agreement(self, tenant: str) -> dict[str, object]:
        """A tenant's agreement figures over its sliding window, plus the calibrator's state.

        The calibrator is fitted on every tenant's labels, so only whether it is fitted is
        shown, not how many labels it saw.
        """
        labels = await asyncio.to_thread(self.store.recent_labels, self.policy.window, tenant)
        figures = agreement(labels)
        figures["tenant"] = tenant
        figures["judge_version"] = self.judge.version
        figures["calibrator"] = {"fitted": self.calibrator is not None}
        return figures

    async def keep_reference(self, ref_id: str, tenant: str, question: str, answer: str) -> bool:
        """Store an approved answer with its question's embedding."""
        [kept] = await self.judge.reference.keep([Approved(ref_id, tenant, question, answer)])
        return kept

    async def on_curated(self, example: ExampleCurated) -> bool:
        """A curated example is an approved answer to its question."""
        return await self.on_curated_many([example]) == 1

    async def on_curated_many(self, examples: Sequence[ExampleCurated]) -> int:
        """Keep a batch of curated examples as approved answers (one embedding call)."""
        approved = [Approved(str(e.example_id), e.tenant, e.question, e.answer) for e in examples]
        return sum(await self.judge.reference.keep(approved))
