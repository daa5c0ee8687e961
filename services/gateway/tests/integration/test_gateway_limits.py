"""The gateway's doors (issue #18) on the real process: body and header limits, unencodable text.

A lone surrogate in a chat message used to reach the tokenizer and the capture and answer 500.
"""

from __future__ import annotations

import httpx
import pytest
from gateway_support import Gateway

from raftloop_core.testing import assert_doors_held, knock_on_doors
from raftloop_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

CHAT = {"model": "raftloop", "messages": [{"role": "user", "content": "Refunds?"}], "max_tokens": 2}


async def test_chat_refuses_what_breaks_a_limit_and_keeps_answering(gateway: Gateway) -> None:
    defaults = GatewaySettings()
    logged = len(gateway.log.read_bytes())
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        answers = await knock_on_doors(
            http,
            "/v1/chat/completions",
            body=CHAT,
            text_field="messages.0.content",
            max_body_bytes=defaults.max_request_bytes,
            max_header_bytes=defaults.max_header_bytes,
            headers=gateway.auth("client"),
        )
        after = await http.post("/v1/chat/completions", json=CHAT, headers=gateway.auth("client"))

    assert_doors_held(answers, prefix="GATEWAY_", param="messages.0.content")
    assert "262144 bytes" in answers.declared.json()["error"]["message"]
    assert after.status_code == 200, after.text
    assert b"Traceback" not in gateway.log.read_bytes()[logged:]
