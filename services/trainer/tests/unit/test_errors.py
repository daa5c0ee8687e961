"""The error analysis of a run (issue #20): each failure mode's rule on hand-made answers, the
analysis of an evaluation result, and its table in the run report."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from raftloop_core.events import HOLDOUT_ERRORS_PREFIX
from raftloop_core.settings import RuntimeSettings
from raftloop_trainer.errors import (
    EXCERPT_CHARS,
    MODES,
    AnswerRecord,
    analyse,
    classify,
    error_analysis,
    error_counts,
)
from raftloop_trainer.evaluate import generation_lengths, holdout_items
from raftloop_trainer.raft import (
    BEGIN_QUOTE,
    END_QUOTE,
    NO_QUOTE_REASONING,
    Chunk,
    RaftSource,
    build_example,
    reasoning_target,
)
from raftloop_trainer.report import markdown, report_payload, write_report
from raftloop_trainer.runner import Runner
from raftloop_trainer.settings import TrainerSettings

ORACLE = "Refunds are issued within five business days. Refunds go back to the card."
DISTRACTOR = "Support is open Monday to Friday from 9:00 to 17:00."
QUESTION = "How long do refunds take?"
GOOD = reasoning_target([Chunk("o", ORACLE)], "Within five business days.", oracle_kept=True)


def record(answer: str, **fields: Any) -> AnswerRecord:
    base: dict[str, Any] = {
        "item_id": "q1",
        "question": QUESTION,
        "answer": answer,
        "oracle": (ORACLE,),
        "documents": (DISTRACTOR, ORACLE),
        "finish_reason": "stop",
    }
    return AnswerRecord(**(base | fields))


def modes(answer: str, **fields: Any) -> list[str]:
    return [f.mode for f in classify(record(answer, **fields))]


def quoted(text: str) -> str:
    return f"The documents say: {BEGIN_QUOTE}{text}{END_QUOTE}\nAnswer: Five days."


def test_the_raft_target_itself_shows_no_failure() -> None:
    assert modes(GOOD) == []


def test_a_repeated_ngram_covering_the_answer_is_a_loop() -> None:
    loop = "Answer: refunds take five days. " * 5
    [finding] = [f for f in classify(record(loop)) if f.mode == "repetition"]
    assert finding.detail.startswith('"answer refunds take five days" x5.0')
    assert "repetition" in modes("Answer: " + "five " * 12)
    # Words said twice in a short answer, or once each in a long one, are not a loop.
    assert "repetition" not in modes("Answer: five business days, five days at most.")
    assert "repetition" not in modes(GOOD + " The refund goes back to the card you paid with.")


def test_a_loop_must_cover_a_large_share_of_the_answer() -> None:
    opening = " ".join(f"word{i}" for i in range(30))
    assert "repetition" not in modes(f"{opening} very very very")
    assert "repetition" in modes(f"{opening} " + "very " * 21)


def test_no_quote_with_the_oracle_shown_is_a_missing_quote() -> None:
    assert "quote_missing" in modes("Answer: Within five business days.")
    # Without an oracle the RAFT target has no quote either: nothing is missing.
    assert "quote_missing" not in modes(
        f"{NO_QUOTE_REASONING}\nAnswer: Five days.", oracle=(), documents=(DISTRACTOR,)
    )


def test_a_quote_in_no_document_is_invented_and_one_from_a_distractor_is_off_oracle() -> None:
    invented = classify(record(quoted("Refunds are instant for every customer.")))
    assert [f.mode for f in invented] == ["quote_invented"]
    assert invented[0].detail == "Refunds are instant for every customer."
    assert modes(quoted("support is open monday to friday")) == ["quote_off_oracle"]
    # Case, spacing and punctuation do not matter; a quote cut by the limit still matches.
    assert modes(quoted("refunds are issued   WITHIN five business days")) == []
    reopened = f"{BEGIN_QUOTE}Refunds go back to the card. {BEGIN_QUOTE} Answer: Five days."
    assert modes(reopened) == []  # a quote left open ends where the next one begins
    cut = f"The documents say: {BEGIN_QUOTE}Refunds are issued within"
    assert modes(cut, finish_reason="length") == ["cut_by_limit"]


def test_a_number_or_date_the_oracle_does_not_have_contradicts_it() -> None:
    [finding] = [f for f in classify(record(quoted(ORACLE) + " 7 days")) if f.mode != "quote_"]
    assert finding.mode == "number_contradicts"
    assert finding.detail == "answer 7; oracle 5"
    assert modes("Answer: 5 days.", oracle=(ORACLE,)) == ["quote_missing"]  # five == 5
    hours = "Support is open Monday to Friday from 9 am to 5 pm."
    answer = quoted(hours).replace("Five days.", "Monday to Saturday, 9:00 to 5.")
    assert modes(answer, oracle=(hours,), documents=(hours,)) == ["number_contradicts"]
    # Values of the question are allowed; so is any number when the oracle has none.
    assert modes(quoted(ORACLE).replace("Five days.", "Five days, not 30."), question="30?") == []
    cites = quoted(ORACLE).replace("Five days.", "Document 2 says five days.")
    assert modes(cites) == []  # how the prompt numbers its documents is not a value
    wordy = "Refunds are issued quickly."
    assert modes(quoted(wordy).replace("Five", "In 7"), oracle=(wordy,), documents=(wordy,)) == []


def test_one_is_a_number_only_on_the_oracles_side() -> None:
    plan = "The Free plan includes 5 GB of storage for one device."
    answer = quoted(plan).replace("Five days.", "5 GB on 1 device, the one you use most.")
    assert modes(answer, oracle=(plan,), documents=(plan,)) == []


def test_refusals_and_empty_answers() -> None:
    assert "refusal_or_empty" in modes("")
    assert "refusal_or_empty" in modes(quoted(ORACLE).replace("Five days.", ""))
    assert "refusal_or_empty" in modes("I'm sorry, I can't help with that.")
    assert "refusal_or_empty" in modes("Answer: I don't know.")
    assert "refusal_or_empty" not in modes(quoted(ORACLE).replace("Five", "You cannot wait five"))


def test_claiming_no_document_although_the_oracle_was_shown() -> None:
    claim = f"{NO_QUOTE_REASONING}\nAnswer: Five days."
    assert "no_document_claimed" in modes(claim)
    assert "no_document_claimed" in modes("None of the documents says. Answer: Five days.")
    assert "no_document_claimed" not in modes(claim, oracle=(), documents=(DISTRACTOR,))
    assert "no_document_claimed" not in modes(GOOD)


def test_cut_by_the_length_limit_and_oracle_not_retrieved() -> None:
    assert "cut_by_limit" in modes(GOOD, finish_reason="length")
    assert "cut_by_limit" not in modes(GOOD, finish_reason="stop")
    assert "cut_by_limit" not in modes(GOOD, finish_reason=None)  # not recorded: not counted
    assert "oracle_not_retrieved" in modes(GOOD, oracle=(), documents=(DISTRACTOR,))
    assert "oracle_not_retrieved" not in modes(GOOD)


def test_an_answer_can_show_several_modes_in_table_order() -> None:
    answer = f"{NO_QUOTE_REASONING} " * 4
    assert modes(answer, finish_reason="length") == [
        "repetition",
        "quote_missing",
        "no_document_claimed",
        "cut_by_limit",
    ]


def test_analyse_counts_shares_and_keeps_three_short_examples() -> None:
    long = "I'm sorry. " + "x" * 400
    records = [record(long, item_id=f"q{i}") for i in range(5)] + [record(GOOD, item_id="ok")]
    got = analyse(records)
    assert list(got) == list(MODES)
    refusals = got["refusal_or_empty"]
    assert refusals["count"] == 5
    assert refusals["share"] == round(5 / 6, 4)
    assert [e["item_id"] for e in refusals["examples"]] == ["q0", "q1", "q2"]
    assert all(len(e["answer"]) <= EXCERPT_CHARS for e in refusals["examples"])
    assert refusals["examples"][0]["question"] == QUESTION
    assert got["repetition"] == {"count": 0, "share": 0.0, "examples": []}
    assert analyse([])["quote_missing"]["share"] == 0.0


def scores() -> dict[str, Any]:
    """A hand-made `scores.json`: two hold-out items and one regression item."""
    items = [
        {"item_id": "h1", "set": "holdout", "messages": [], "reference": "5 days."}
        | {"question": QUESTION, "oracle": [ORACLE], "documents": [DISTRACTOR, ORACLE]},
        {"item_id": "h2", "set": "holdout", "messages": [], "reference": "Friday."}
        | {"question": "When?", "oracle": [], "documents": [DISTRACTOR]},
        {
            "item_id": "r1",
            "set": "regression",
            "messages": [{"role": "user", "content": "Capital of France?"}],
            "reference": "Paris.",
        },
    ]
    return {
        "items": items,
        "max_new_tokens": 8,
        "variants": {
            "base": {"outputs": ["Answer: 7 days.", "", ""], "finish_reasons": ["stop"] * 3},
            "adapter:abc": {
                "outputs": [GOOD, f"{NO_QUOTE_REASONING}\nAnswer: Friday.", "Paris."],
                "finish_reasons": ["stop", "length", "stop"],
            },
        },
    }


def test_error_analysis_of_an_evaluation_result_covers_the_holdout_only() -> None:
    got = error_analysis(scores(), [("base", "base"), ("candidate", "adapter:abc")])
    assert got["items"] == 2
    assert got["max_new_tokens"] == 8
    base, candidate = got["columns"]
    assert (base["label"], base["variant"]) == ("base", "base")
    counts = {m: e["count"] for m, e in base["modes"].items() if e["count"]}
    assert counts == {
        "quote_missing": 1,
        "number_contradicts": 1,
        "refusal_or_empty": 1,
        "oracle_not_retrieved": 1,
    }
    counts = {m: e["count"] for m, e in candidate["modes"].items() if e["count"]}
    assert counts == {"cut_by_limit": 1, "oracle_not_retrieved": 1}
    metrics = error_counts(got, "candidate")
    assert metrics[f"{HOLDOUT_ERRORS_PREFIX}cut_by_limit"] == 1.0
    assert len(metrics) == len(MODES)
    assert error_counts(got, "serving") == {}
    assert error_counts(None, "candidate") == {}


def test_old_results_without_finish_reasons_or_oracle_texts_still_analyse() -> None:
    result = scores()
    for item in result["items"]:
        item.pop("oracle", None)
        item.pop("documents", None)
        item.pop("question", None)
    result["variants"]["base"].pop("finish_reasons")
    [column] = error_analysis(result, [("base", "base")])["columns"]
    assert column["modes"]["cut_by_limit"]["count"] == 0
    assert column["modes"]["oracle_not_retrieved"]["count"] == 2


def test_the_report_has_the_error_table_and_examples(tmp_path: Path) -> None:
    analysis = error_analysis(scores(), [("base = serving", "base"), ("candidate", "adapter:abc")])
    payload = report_payload(
        title="run-1",
        baseline="base",
        candidate="adapter:abc",
        diffs={},
        decision=None,
        extra={"error_analysis": analysis},
    )
    path = write_report(tmp_path, payload)
    assert json.loads(path.read_text())["error_analysis"] == analysis
    md = (tmp_path / "report.md").read_text()
    assert md == markdown(payload)
    assert "## error analysis (hold-out, 2 items)" in md
    assert "| failure mode | base = serving `base` | candidate `adapter:abc` |" in md
    assert "| quote missing | 1 (50%) | 0 (0%) |" in md
    assert "| cut by max_new_tokens | 0 (0%) | 1 (50%) |" in md
    assert "### examples: candidate `adapter:abc`" in md
    assert "- cut by max_new_tokens, `h2` (ended at max_new_tokens): When? →" in md
    assert "error analysis" not in markdown(
        {k: v for k, v in payload.items() if k != "error_analysis"}
    )


def test_generation_lengths_stop_at_the_first_end_token() -> None:
    rows = [[5, 6, 2, 0, 0], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0]]
    assert generation_lengths(rows, {2}) == [(2, "stop"), (5, "length"), (0, "stop")]


def test_holdout_items_carry_the_texts_of_their_documents_and_oracle() -> None:
    source = RaftSource("e1", QUESTION, "Five days.", (Chunk("o", ORACLE),))
    kept = build_example(source, [Chunk("d", DISTRACTOR)], rng=random.Random(0), p_oracle=1.0)
    dropped = build_example(source, [Chunk("d", DISTRACTOR)], rng=random.Random(0), p_oracle=0.0)
    [with_oracle, without] = holdout_items([kept, dropped])
    assert with_oracle.oracle == [ORACLE]
    assert sorted(with_oracle.documents) == sorted([ORACLE, DISTRACTOR])
    assert without.oracle == []
    assert without.documents == [DISTRACTOR]


class FakeRegistry:
    """`serving` and `get` of an `AdapterRegistry` whose alias serves `serving`."""

    def __init__(self, serving: str | None) -> None:
        self.serving_id = serving

    def serving(self, alias: str, tenant: str) -> SimpleNamespace:
        return SimpleNamespace(adapter_id=self.serving_id)

    def get(self, adapter_id: str) -> Path:
        return Path("/registry") / adapter_id


def lineup_of(tmp_path: Path, serving: str | None, **settings: Any) -> Sequence[Any]:
    runner = Runner(
        settings=TrainerSettings(runtime=RuntimeSettings(data_dir=tmp_path), **settings),
        store=None,
        registry=FakeRegistry(serving),  # type: ignore[arg-type]
        sink=None,  # type: ignore[arg-type]
        distractors=None,  # type: ignore[arg-type]
        base_model_dir=tmp_path,
        base_model="tiny",
    )
    lineup = runner._lineup("acme", [])
    return [lineup.columns, lineup.base.name if lineup.base else None]


@pytest.mark.parametrize(
    ("serving", "settings", "columns", "base"),
    [
        (None, {}, [("base = serving", "base")], None),
        ("s" * 64, {}, [("base", "base"), ("serving", "adapter:ssssssssssss")], "base"),
        ("s" * 64, {"eval_base": False}, [("serving", "adapter:ssssssssssss")], None),
    ],
)
def test_a_run_analyses_base_serving_and_candidate(
    tmp_path: Path,
    serving: str | None,
    settings: dict[str, Any],
    columns: list[tuple[str, str]],
    base: str | None,
) -> None:
    assert lineup_of(tmp_path, serving, **settings) == [columns, base]
