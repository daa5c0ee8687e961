"""Pure decisions: routing, canary stickiness, conversations, sources, stop strings, limits."""

from __future__ import annotations

from typing import Any

import pytest

from raftloop_core import prompting
from raftloop_core.events import ChatMessage, RetrievedChunk
from raftloop_gateway.domain import (
    RateLimited,
    Route,
    StopScanner,
    UnknownModel,
    canary_bucket,
    choose_route,
    conversation_id,
    last_user_turn,
    sources_footer,
    with_sources,
)
from raftloop_gateway.limits import RateLimiter

A, B = "a" * 64, "b" * 64


def route(model: str, **kw: Any) -> Route:
    args: dict[str, Any] = {
        "served_model": "raftloop",
        "base_names": ["smollm2"],
        "serving": A,
        "canary": None,
        "canary_share": 0.0,
        "conversation_id": "c1",
        "known": [],
    } | kw
    return choose_route(model, **args)


def test_alias_routes_to_the_serving_adapter() -> None:
    assert route("raftloop").adapter_id == A
    assert route("serving").reason == "serving"
    assert route("raftloop", serving=None).adapter_id is None


def test_base_name_and_pinned_adapters() -> None:
    assert route("smollm2").adapter_id is None
    assert route(B, known=[B]).adapter_id == B
    with pytest.raises(UnknownModel, match="GET /v1/models"):
        route("gpt-4o")


def test_canary_share_is_sticky_and_close_to_its_share() -> None:
    chosen = [
        route("raftloop", canary=B, canary_share=0.2, conversation_id=f"c{i}").adapter_id
        for i in range(2000)
    ]
    share = chosen.count(B) / len(chosen)
    assert 0.15 < share < 0.25
    again = [
        route("raftloop", canary=B, canary_share=0.2, conversation_id=f"c{i}").adapter_id
        for i in range(2000)
    ]
    assert again == chosen
    assert 0 <= canary_bucket("x") < 1


def test_canary_equal_to_serving_is_just_serving() -> None:
    assert route("raftloop", canary=A, canary_share=1.0).reason == "serving"


def test_conversation_id_is_explicit_or_derived_from_the_opening() -> None:
    first = [ChatMessage(role="user", content="hello")]
    later = [
        *first,
        ChatMessage(role="assistant", content="hi"),
        ChatMessage(role="user", content="more"),
    ]
    derived = conversation_id(None, tenant="t", key_id="k", messages=first)
    assert derived == conversation_id(None, tenant="t", key_id="k", messages=later)
    assert derived != conversation_id(None, tenant="u", key_id="k", messages=first)
    assert conversation_id("mine", tenant="t", key_id="k", messages=first) == "mine"
    assert last_user_turn(later) == "more"


def test_sources_are_numbered_in_the_system_prompt_and_cited() -> None:
    chunks = [
        RetrievedChunk(chunk_id="d1#0", document_id="d1", text="Refunds take 5 days.", score=0.9,
                       title="Refunds", source="refund-policy.md"),
        RetrievedChunk(chunk_id="d2#0", document_id="d2", text="Ships in 2 days.", score=0.5),
    ]  # fmt: skip
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="?"),
    ]
    out = with_sources(messages, chunks)
    assert out[0].content.startswith("Be brief.")
    assert "[1] Refunds\nRefunds take 5 days." in out[0].content
    assert "[2] d2\nShips in 2 days." in out[0].content
    assert out[1:] == messages[1:]
    bare = with_sources(messages[1:], chunks)
    assert bare[0].role == "system"
    assert with_sources(messages, []) == messages
    assert sources_footer(chunks) == "\n\nSources: [1] Refunds (d1); [2] d2"
    assert sources_footer([]) == ""


def test_citations_name_title_and_id_never_the_servers_path() -> None:
    chunks = [
        RetrievedChunk(chunk_id="d1#0", document_id="d1", text="x", score=0.9, title="Refunds",
                       source="/home/ops/kb/private/refund-policy.md"),
        RetrievedChunk(chunk_id="d2#0", document_id="d2", text="y", score=0.5,
                       source="/srv/kb/untitled.txt"),
    ]  # fmt: skip
    footer = sources_footer(chunks)
    assert footer == "\n\nSources: [1] Refunds (d1); [2] d2"
    for layout in ("sources", "raft"):
        prompt = with_sources([ChatMessage(role="user", content="?")], chunks, layout)
        assert "/home" not in str(prompt)
        assert "/srv" not in str(prompt)


@pytest.mark.parametrize(
    ("pieces", "stops", "expected", "stopped"),
    [
        (["Hel", "lo wor", "ld"], [], "Hello world", False),
        (["Hel", "lo wor", "ld"], ["wor"], "Hello ", True),
        (["a", "b", "##", "c"], ["##"], "ab", True),
        (["a#", "b#", "#c"], ["##"], "a#b", True),
        (["abc"], ["zz"], "abc", False),
    ],
)
def test_stop_scanner(pieces: list[str], stops: list[str], expected: str, stopped: bool) -> None:
    scanner = StopScanner(stops)
    out = "".join(scanner.feed(p) for p in pieces) + scanner.flush()
    assert out == expected
    assert scanner.stopped is stopped


def test_rate_limiter_refills_per_minute() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    for _ in range(3):
        limiter.admit("k", requests_per_minute=3, tokens_per_minute=1000)
    with pytest.raises(RateLimited, match="request rate limit of 3/min") as refused:
        limiter.admit("k", requests_per_minute=3, tokens_per_minute=1000)
    assert refused.value.retry_after == 20
    limiter.admit("other", requests_per_minute=3, tokens_per_minute=1000)  # per key
    now[0] = 20.0
    limiter.admit("k", requests_per_minute=3, tokens_per_minute=1000)


def test_token_limit_blocks_after_spending() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    limiter.admit("k", requests_per_minute=100, tokens_per_minute=60)
    limiter.spend_tokens("k", 90, tokens_per_minute=60)
    with pytest.raises(RateLimited, match="token rate limit"):
        limiter.admit("k", requests_per_minute=100, tokens_per_minute=60)
    now[0] = 31.0
    limiter.admit("k", requests_per_minute=100, tokens_per_minute=60)


def test_raft_layout_rewrites_the_question_as_the_trainers_prompt() -> None:
    chunks = [
        RetrievedChunk(chunk_id="d1#0", document_id="d1", text="Refunds take 5 days.", score=0.9,
                       title="Refunds"),
    ]  # fmt: skip
    history = [
        ChatMessage(role="user", content="Hi"),
        ChatMessage(role="assistant", content="Hello."),
        ChatMessage(role="user", content="How long do refunds take?"),
    ]
    out = with_sources(history, chunks, "raft")
    assert out[0] == ChatMessage(role="system", content=prompting.SYSTEM_PROMPT)
    assert out[1:3] == history[:2]
    expected = prompting.raft_prompt(
        "How long do refunds take?", [prompting.Document("Refunds take 5 days.", "Refunds")]
    )
    assert out[3] == ChatMessage(role="user", content=expected)
    assert "Document 1 (Refunds):\nRefunds take 5 days." in expected
    own = [ChatMessage(role="system", content="Be brief."), history[-1]]
    assert with_sources(own, chunks, "raft")[0].content == "Be brief."
    assert with_sources(history, [], "raft") == history
