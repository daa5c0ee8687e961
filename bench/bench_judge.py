"""Judged interactions/s against a fixed-latency OpenAI-compatible stub, at several concurrencies.

Our path: `JudgeService.handle_many`, the code the batch consumer runs per poll (LLM rubric judge
through the `openai` client over loopback HTTP, reference evaluators with the real MiniLM
embedder, SQLite state). Baseline: the same judge with concurrency 1 (one request at a time).
Target: judged/s >= 90% of concurrency / (latency x requests per interaction). The stub answers
after 500 ms, a short completion's latency; the per-interaction CPU work (client, embeddings,
SQLite) is what separates the figures from the ideal, so the load average is reported too.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import uvicorn
from fastapi import FastAPI, Request
from openai import AsyncOpenAI

from raftloop_core.embedded import free_port, wait_for_port
from raftloop_core.events import ChatMessage, Interaction, InteractionIngested
from raftloop_judge.adapters import (
    OpenAIChatEndpoint,
    SentenceTransformerEmbedder,
    bundled_embedding_model,
)
from raftloop_judge.app import build_service
from raftloop_judge.settings import JudgeSettings
from raftloop_judge.store import SqlJudgeStore

TITLE = "judge: judged interactions/s vs endpoint concurrency (fixed-latency stub)"
LATENCY_S = 0.5
CONCURRENCY = (1, 4, 16)
CRITERIA = ["helpfulness"]  # one request per interaction keeps the ideal rate simple
TOKENS = [("{", -0.01), ('"score', -0.01), ('":', -0.01), (" ", -0.01), ("4", -0.3)]


def stub() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "stub", "object": "model", "created": 0,
                                            "owned_by": "bench"}]}  # fmt: skip

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        await request.json()
        await asyncio.sleep(LATENCY_S)
        top = [{"token": str(i), "logprob": math.log(p), "bytes": None}
               for i, p in ((4, 0.6), (5, 0.25), (3, 0.15))]  # fmt: skip
        content = [{"token": t, "logprob": lp, "bytes": None,
                    "top_logprobs": top if t == "4" else []} for t, lp in TOKENS]  # fmt: skip
        return {"id": "x", "object": "chat.completion", "created": 0, "model": "stub",
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": {"content": content},
                             "message": {"role": "assistant",
                                         "content": '{"score": 4, "rationale": "ok"}'}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                          "total_tokens": 2}}  # fmt: skip

    return app


def event(i: int) -> InteractionIngested:
    interaction = Interaction(
        interaction_id=uuid4(), conversation_id=f"c{i}", model="m", base_model="b",
        messages=[ChatMessage(role="user", content=f"How long do refunds take for order {i}?")],
        answer=f"Refunds for order {i} take five business days.",
    )  # fmt: skip
    return InteractionIngested(interaction=interaction, source_event_id=uuid4())


async def measure(url: str, concurrency: int, embedder: SentenceTransformerEmbedder) -> float:
    folder = Path(tempfile.mkdtemp(prefix="bench-judge-"))
    settings = JudgeSettings(runtime={"data_dir": folder}, criteria=CRITERIA,
                             concurrency=concurrency)  # fmt: skip
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=64))
    # openai accepts an httpx client as well as its own httpx2 one, but types only the latter.
    client = AsyncOpenAI(
        base_url=url,
        api_key="bench",
        max_retries=0,
        http_client=http,  # type: ignore[arg-type]
    )

    async def publish(_: object) -> None:
        return None

    store = SqlJudgeStore(settings.database_url())
    service = build_service(
        settings, endpoint=OpenAIChatEndpoint(client), embedder=embedder, store=store,
        publish=publish,
    )  # fmt: skip
    await service.handle_many([event(-1)])  # warm up: model list, embedder, connections
    n = max(20, concurrency * 10)
    events = [event(i) for i in range(n)]
    batch = max(16, concurrency * 4)
    start = time.perf_counter()
    for k in range(0, n, batch):
        failures = await service.handle_many(events[k : k + batch])
        assert not failures, failures
    elapsed = time.perf_counter() - start
    await client.close()
    return n / elapsed


def run() -> dict[str, float | int | str]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    port = free_port()
    # The stub runs in its own process so that it does not share our interpreter's GIL.
    proc = subprocess.Popen([sys.executable, __file__, "--stub", str(port)])
    wait_for_port("127.0.0.1", port, timeout_s=60, proc=proc)
    url = f"http://127.0.0.1:{port}/v1"

    async def measure_all() -> list[float]:
        embedder = SentenceTransformerEmbedder(bundled_embedding_model())
        return [await measure(url, c, embedder) for c in CONCURRENCY]

    out: dict[str, float | int | str] = {
        "latency_ms": int(LATENCY_S * 1000),
        "requests_per_interaction": len(CRITERIA),
        "target": "judged/s >= 90% of concurrency / (latency x requests per interaction)",
        "cpu_count": os.cpu_count() or 0,
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    try:
        for c, rate in zip(CONCURRENCY, asyncio.run(measure_all()), strict=True):
            ideal = c / (LATENCY_S * len(CRITERIA))
            label = "baseline_sequential" if c == 1 else f"c{c}"
            out[f"{label}_judged_per_s"] = round(rate, 2)
            out[f"{label}_ideal_per_s"] = round(ideal, 2)
            out[f"{label}_share_of_ideal"] = round(rate / ideal, 3)
        out["speedup_c16_vs_sequential"] = round(
            float(out["c16_judged_per_s"]) / float(out["baseline_sequential_judged_per_s"]), 2
        )
        out["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return out


if __name__ == "__main__" and sys.argv[1:2] == ["--stub"]:
    uvicorn.run(stub(), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
elif __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value}")
