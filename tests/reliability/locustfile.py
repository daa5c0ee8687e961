"""Locust user for the load test: a steady rate of chat requests through the gateway.

Half the requests are streamed and a tenth of all are aborted after the first chunk. Every
interaction id the gateway acknowledged (the response header) is appended to
RELIABILITY_ACKED_FILE with its kind, so the test can check capture completeness.
Run by test_reliability_load.py as `locust --headless`; not a test module itself.
"""

from __future__ import annotations

import os
import random
import threading

from locust import HttpUser, constant_throughput, task

HEADER = "x-raftloop-interaction-id"
_lock = threading.Lock()


class ChatUser(HttpUser):
    """One chat client sending one request per second."""

    wait_time = constant_throughput(1)

    def on_start(self) -> None:
        self.key = os.environ["RELIABILITY_CLIENT_KEY"]
        self.marker = os.environ["RELIABILITY_MARKER"]
        self.rng = random.Random()

    def _ack(self, kind: str, interaction_id: str | None) -> None:
        if interaction_id:
            with _lock, open(os.environ["RELIABILITY_ACKED_FILE"], "a") as out:
                out.write(f"{kind} {interaction_id}\n")

    @task
    def chat(self) -> None:
        draw = self.rng.random()
        kind = "aborted" if draw < 0.1 else "streamed" if draw < 0.5 else "plain"
        body = {
            "model": "raftloop",
            "messages": [{"role": "user", "content": f"{self.marker} {kind}: refund time?"}],
            "max_tokens": 8,
            "stream": kind != "plain",
        }
        headers = {"Authorization": f"Bearer {self.key}"}
        with self.client.post(
            "/v1/chat/completions",
            json=body,
            headers=headers,
            name=f"chat {kind}",
            stream=kind != "plain",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            if kind == "aborted":
                for _chunk in response.iter_content(chunk_size=64):
                    break  # the client goes away mid-stream
                response.close()
            elif kind == "streamed":
                for _line in response.iter_lines():
                    pass
            response.success()
            self._ack(kind, response.headers.get(HEADER))
