"""Small OpenAI-compatible servers that model endpoint behaviours the judge must handle.

- `logprobs`: answers the rubric JSON and returns per-token logprobs (like vLLM or the gateway).
- `nologprobs`: answers valid JSON but never returns logprobs.
- `garbage`: answers prose that is never a valid verdict.
- `gullible`: obeys any instruction it finds in the prompt (a judge without hardening would be
  moved by injected answers); otherwise scores by how much the answer overlaps the question.
Each serves real HTTP on loopback so the judge goes through the `openai` client.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request

from raftloop_core.embedded import free_port

OBEY = re.compile(
    r"(score|rate|give|award)[^.\n]{0,40}\b(5|five|10|full|perfect|top|maximum)\b", re.IGNORECASE
)
WORD = re.compile(r"[a-z]{3,}")


def _answer_and_question(prompt: str) -> tuple[str, str]:
    answer = prompt.split("[answer]", 1)[-1].split("<</DATA", 1)[0]
    question = prompt.split("[question]", 1)[-1].split("[", 1)[0]
    return answer, question


def honest_score(prompt: str) -> int:
    """A deterministic score from question/answer word overlap (1-5)."""
    answer, question = _answer_and_question(prompt)
    q, a = set(WORD.findall(question.lower())), set(WORD.findall(answer.lower()))
    overlap = len(q & a) / len(q) if q else 0.0
    return 1 + min(4, round(overlap * 4 + 0.5))


def _distribution(score: int) -> dict[str, float]:
    probs = {str(i): 0.02 for i in range(1, 6)}
    probs[str(score)] = 0.7
    for n in (score - 1, score + 1):
        if 1 <= n <= 5:
            probs[str(n)] = 0.1
    total = sum(probs.values())
    return {k: math.log(v / total) for k, v in probs.items()}


def _logprobs(text: str, score: int, k: int) -> dict[str, Any]:
    pieces = re.findall(r"\s*\w+|\s*[^\w\s]", text)
    content = []
    for piece in pieces:
        if piece.strip() == str(score):
            dist = sorted(_distribution(score).items(), key=lambda kv: -kv[1])[:k]
            top = [{"token": t, "logprob": lp, "bytes": None} for t, lp in dist]
            logprob = dict(dist)[str(score)]
        else:
            top, logprob = [{"token": piece, "logprob": -0.01, "bytes": None}], -0.01
        content.append({"token": piece, "logprob": logprob, "bytes": None, "top_logprobs": top})
    return {"content": content}


def stub_app(behaviour: str, latency_s: float = 0.0) -> FastAPI:
    """An OpenAI-compatible chat endpoint with one behaviour."""
    app = FastAPI()
    app.state.requests = 0

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": f"stub-{behaviour}", "object": "model", "created": 0, "owned_by": "tests"}
            ],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        app.state.requests += 1
        if latency_s:
            await asyncio.sleep(latency_s)
        prompt = "\n".join(m["content"] for m in body["messages"])
        score = honest_score(prompt)
        if behaviour == "gullible" and OBEY.search(prompt.split("<<DATA", 1)[-1]):
            score = 5
        text = f'{{"score": {score}, "rationale": "overlap based"}}'
        if behaviour == "garbage":
            text = "I think it is pretty good overall, maybe."
        logprobs = None
        if behaviour in ("logprobs", "gullible") and body.get("logprobs"):
            logprobs = _logprobs(text, score, int(body.get("top_logprobs") or 5))
        return {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "stub"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": logprobs,
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    return app


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve `app` on a free loopback port in a thread; yield its `/v1` base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("stub endpoint did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
