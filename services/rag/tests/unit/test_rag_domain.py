import numpy as np
import pytest

from raftloop_rag.domain import (
    BadFilter,
    check_filters,
    chunk_id,
    mmr,
    parse_chunk_id,
    point_id,
)


def test_point_ids_are_deterministic_and_scoped_by_tenant() -> None:
    assert point_id("acme", "doc.md", 3) == point_id("acme", "doc.md", 3)
    assert point_id("acme", "doc.md", 3) != point_id("acme", "doc.md", 4)
    assert point_id("acme", "doc.md", 3) != point_id("globex", "doc.md", 3)


def test_chunk_ids_round_trip_even_with_hashes_in_document_ids() -> None:
    assert parse_chunk_id(chunk_id("a#b.md", 12)) == ("a#b.md", 12)
    with pytest.raises(BadFilter, match="not a chunk id"):
        parse_chunk_id("doc.md")


@pytest.mark.parametrize("key", ["tenant", "TENANT", "metadata.tenant", "payload.tenant_id"])
def test_filters_can_never_name_the_tenant(key: str) -> None:
    with pytest.raises(BadFilter, match="tenant comes from your API key"):
        check_filters({key: "globex"})


def test_unknown_filter_keys_and_empty_lists_are_refused() -> None:
    with pytest.raises(BadFilter, match="cannot filter on 'text'"):
        check_filters({"text": "x"})
    with pytest.raises(BadFilter, match="empty list"):
        check_filters({"document_id": []})
    ok: dict[str, str | int | list[str] | list[int]] = {
        "document_id": ["a", "b"],
        "chunk_index": 0,
        "metadata.lang": "en",
    }
    assert check_filters(ok) == ok


def test_mmr_prefers_a_novel_candidate_over_a_near_duplicate() -> None:
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    best = np.array([0.95, 0.31, 0.0])
    duplicate = best + np.array([0.0, 0.0, 0.01])
    novel = np.array([0.8, -0.6, 0.0])
    candidates = np.stack([best, duplicate, novel]).astype(np.float32)
    candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
    assert mmr(query, candidates, 2, lambda_=1.0) == [0, 1]
    assert mmr(query, candidates, 2, lambda_=0.5) == [0, 2]
    assert mmr(query, candidates, 5, lambda_=0.5) == [0, 2, 1]
    assert mmr(query, candidates[:0], 3, lambda_=0.5) == []
