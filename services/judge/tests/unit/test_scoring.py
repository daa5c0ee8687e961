import math

import pytest

from raftloop_core.pairwise import Completion, TokenTop
from raftloop_judge.scoring import InvalidOutput, rubric_score


def tokens(*pieces: str, at: int, dist: dict[str, float]) -> list[TokenTop]:
    out = []
    for i, piece in enumerate(pieces):
        top = {k: math.log(v) for k, v in dist.items()} if i == at else {piece: 0.0}
        out.append(TokenTop(piece, top))
    return out


def test_geval_weights_the_score_tokens_and_merges_variants() -> None:
    toks = tokens(
        '{"', "score", '":', " 4", ",", at=3, dist={" 4": 0.5, "4": 0.1, "3": 0.3, "x": 0.1}
    )
    score, spread, _, method = rubric_score(Completion('{"score": 4,', toks))
    # p(4)=0.6/0.9, p(3)=0.3/0.9
    assert method == "geval"
    assert score == pytest.approx((4 * 0.6 + 3 * 0.3) / 0.9)
    assert spread == pytest.approx(math.sqrt((2 / 3) * (1 / 3)), rel=1e-6)


def test_geval_uses_the_score_after_the_word_score_not_an_earlier_digit() -> None:
    toks = tokens("1", ".", " score", ":", "5", at=4, dist={"5": 0.9, "4": 0.1})
    toks[0] = TokenTop("1", {"1": 0.0})
    score, _, _, _ = rubric_score(Completion("1. score: 5", toks))
    assert score == pytest.approx(4.9)


def test_logprobs_without_any_score_token_are_invalid() -> None:
    toks = tokens("hello", " there", at=0, dist={"hello": 1.0})
    with pytest.raises(InvalidOutput, match="no score token"):
        rubric_score(Completion("hello there", toks))


def test_structured_output_is_parsed_and_validated() -> None:
    score, spread, rationale, method = rubric_score(
        Completion('Sure! ```json\n{"score": 3, "rationale": "ok"}\n```')
    )
    assert (score, spread, rationale, method) == (3.0, None, "ok", "parsed")


@pytest.mark.parametrize(
    "text",
    ['{"score": 7}', '{"score": "4"}', '{"score": 3.5}', "4", "{score: 4}", "[4]", ""],
)
def test_invalid_structured_output_is_rejected_not_guessed(text: str) -> None:
    with pytest.raises(InvalidOutput):
        rubric_score(Completion(text))


def test_a_reply_without_an_early_score_uses_the_first_position_if_it_carries_enough_mass() -> None:
    first = TokenTop("The", {"The": math.log(0.8), "1": math.log(0.06), "5": math.log(0.02)})
    rest = [TokenTop(w, {w: 0.0}) for w in [" answer", " to", " the", " question", " is"] * 2]
    score, _, _, _ = rubric_score(Completion("The answer ...", [first, *rest, TokenTop("5", {})]))
    assert score == pytest.approx((1 * 0.06 + 5 * 0.02) / 0.08)
    faint = TokenTop("The", {"The": math.log(0.98), "1": math.log(0.01)})
    with pytest.raises(InvalidOutput):
        rubric_score(Completion("The answer ...", [faint, *rest]))


def test_marker_nonces_have_no_digits() -> None:
    from raftloop_judge.prompts import nonce_for

    assert all(
        not nonce_for("v", str(i)).isalnum() or nonce_for("v", str(i)).isalpha() for i in range(200)
    )
