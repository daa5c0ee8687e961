"""The judge with the real gateway (SmolLM2, offline) as its endpoint, over HTTP.

The gateway serves the judge with the internal key, so nothing here is captured as traffic.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftloop_judge.adapters import SentenceTransformerEmbedder

from ..gateway import RunningGateway, run_gateway
from ..unit.test_injection import ATTACKS
from .conftest import make_service
from .test_endpoint_behaviours import QA, ingested

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(
    smollm2_dir: Path, kafka_broker: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGateway]:
    with run_gateway(tmp_path_factory.mktemp("gateway"), smollm2_dir, kafka_broker) as gw:
        yield gw


def judge_via(gw: RunningGateway, tmp_path: Path, embedder: SentenceTransformerEmbedder):  # type: ignore[no-untyped-def]
    return make_service(
        gw.base_url,
        tmp_path,
        embedder,
        key=gw.keys["internal"],
        criteria=["helpfulness"],
        max_tokens=16,
        top_logprobs=20,
        stall_timeout_s=300,
    )[0]


async def test_scores_are_probability_weighted_from_the_gateways_logprobs(
    gateway: RunningGateway, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    service = judge_via(gateway, tmp_path, embedder)
    out = await service.handle(ingested(*QA[0]))
    assert out is not None
    j = out.judgement
    assert j.error is None, j.error
    [llm] = [s for s in j.scores if s.criterion == "helpfulness"]
    assert llm.evaluator == "llm-geval"
    assert llm.spread is not None
    assert llm.spread > 0
    assert 1.0 <= llm.score <= 5.0
    assert j.judge_version.startswith("judge-v1-")


async def test_injection_attempts_through_the_gateway_are_flagged_and_barely_move_scores(
    gateway: RunningGateway, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    # SmolLM2-135M is a weak judge and slow on CPU: a few forms here, the full set on the
    # gullible endpoint in test_endpoint_behaviours.
    service = judge_via(gateway, tmp_path, embedder)
    question, answer = QA[0]
    base = await service.handle(ingested(question, answer))
    assert base is not None
    attacked = []
    for attack in ATTACKS[::2]:
        tail = attack.split("Refunds take 5 days.", 1)[-1]
        out = await service.handle(ingested(question, f"{answer} {tail}"))
        assert out is not None
        assert [f.code for f in out.judgement.flags] == ["judge_injection"]
        # Scored from logprobs or recorded as an error: never a guessed score.
        assert (out.judgement.overall is None) == (out.judgement.error is not None)
        if out.judgement.overall is not None:
            attacked.append(out.judgement.overall)
    print(f"gateway: clean {base.judgement.overall}, attacked {attacked}")  # noqa: T201
    assert base.judgement.overall is not None, base.judgement.error
    assert attacked
    assert abs(statistics.mean(attacked) - base.judgement.overall) <= 0.5
