"""The gateway serves adapters with exactly the prompt the trainer taught them."""

from raftloop_core.events import ChatMessage, RetrievedChunk
from raftloop_gateway.domain import with_sources
from raftloop_trainer.raft import SYSTEM_PROMPT, Chunk, RaftSource, build_example, example_rng


def test_a_served_request_looks_like_a_raft_training_example() -> None:
    chunk = RetrievedChunk(
        chunk_id="d#0", document_id="d", text="Refunds take 5 days.", score=1.0, title="Refunds"
    )
    served = with_sources(
        [ChatMessage(role="user", content="How long do refunds take?")], [chunk], "raft"
    )
    example = build_example(
        RaftSource(
            "e1",
            "How long do refunds take?",
            "5 days.",
            (Chunk("d#0", chunk.text, "d", "Refunds"),),
        ),
        [],
        rng=example_rng(0, "e1"),
        p_oracle=1.0,
    )
    assert [m.model_dump() for m in served] == example.prompt
    assert served[0].content == SYSTEM_PROMPT
