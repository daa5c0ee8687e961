"""Error analysis of an evaluation: the failure modes of each variant's hold-out answers.

Pure code, no I/O. Each answer is checked against the RAFT answer format (a quote between
`##begin_quote##` and `##end_quote##`, then `Answer: ...`) and against the texts of the chunks its
prompt showed. An answer can show several modes. The rules, all on lower-cased word tokens
(`raft.words`: punctuation and spacing never matter):

- `repetition`: a stretch of the answer (8 words or more) repeats one n-gram back to back, with
  a period of 1 to 20 words, at least 3 times for a period under 4 words and twice for a longer
  one, and the stretch covers 40% of the answer's words or more.
- `quote_missing`: the oracle chunk was shown and the answer quotes nothing.
- `quote_invented`: a quoted span is in no chunk the prompt showed (a quote with one word
  changed counts: a changed figure is the commonest such change).
- `quote_off_oracle`: a quoted span is in a distractor chunk but not in the oracle chunk.
- `number_contradicts`: the final answer (after the last `Answer:`) has a number, a year, a month
  or a weekday that neither the oracle nor the question has, while the oracle has at least one
  of the same kind. Digits and the number words two to ninety count as numbers ("one" only on
  the oracle's side: as a pronoun it is not a number); "9:00" is 9 and "1,000" is 1000; a year
  is 1900 to 2099; "may" is never a month; "Document 2" (how the prompt numbers its chunks) is
  not a value.
- `refusal_or_empty`: the answer has no words, or nothing after its last `Answer:`, or says
  "I'm sorry", "I cannot", "I don't know" and the like.
- `no_document_claimed`: the oracle was shown and the answer says no document answers (the
  RAFT target's own phrase, or "none of the documents", "the documents do not", ...).
- `cut_by_limit`: the generation ended at `max_new_tokens`, not at an end-of-sequence token.
- `oracle_not_retrieved`: the item's prompt had no oracle chunk (its reviewer found none among
  the retrieved chunks); the same items for every variant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raftloop_core.events import HOLDOUT_ERRORS_PREFIX
from raftloop_trainer.raft import (
    ANSWER_MARKER,
    BEGIN_QUOTE,
    END_QUOTE,
    NO_QUOTE_REASONING,
    final_answer,
    words,
)

MODES: dict[str, str] = {
    "repetition": "repetition loop",
    "quote_missing": "quote missing",
    "quote_invented": "quote not verbatim in any document",
    "quote_off_oracle": "quote from a distractor",
    "number_contradicts": "number/date not in oracle",
    "refusal_or_empty": "refusal or empty",
    "no_document_claimed": '"no document" with oracle shown',
    "cut_by_limit": "cut by max_new_tokens",
    "oracle_not_retrieved": "oracle not retrieved",
}
"""Every failure mode, in table order, with its label."""

EXAMPLES = 3
EXCERPT_CHARS = 200
LOOP_MIN_WORDS = 8
LOOP_MAX_PERIOD = 20
LOOP_MIN_SHARE = 0.4

_QUOTE = re.compile(
    f"{re.escape(BEGIN_QUOTE)}(.*?)"
    f"(?:{re.escape(END_QUOTE)}|(?={re.escape(BEGIN_QUOTE)})|{re.escape(ANSWER_MARKER)}|$)",
    re.S,
)
_DIGITS = re.compile(r"\b\d+(?:[.,:]\d+)*(?:st|nd|rd|th)?")
_DOCUMENT_NUMBER = re.compile(r"\bdocuments? \d+")  # the prompt's "Document 2", not a value
_UNITS = (
    *("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"),
    *("twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"),
    "nineteen",
)
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_NUMBER_WORDS = {w: str(n) for n, w in enumerate(_UNITS, 2)} | {
    w: str(n) for n, w in zip(range(20, 100, 10), _TENS, strict=True)
}
_MONTHS = {  # "may" left out: it is far more often the verb
    *("january", "february", "march", "april", "june", "july", "august", "september"),
    *("october", "november", "december"),
}
_WEEKDAYS = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
_REFUSALS = (
    "i m sorry",
    "i am sorry",
    "i apologize",
    "i cannot",
    "i can t",
    "i can not",
    "i don t know",
    "i do not know",
    "i m unable",
    "i am unable",
    "i m not able",
    "i am not able",
    "as an ai",
)
_NO_DOCUMENT = (
    NO_QUOTE_REASONING.split(";")[0],
    "none of the documents",
    "the documents do not",
    "the documents don t",
    "the documents does not",
    "not in the documents",
    "not mentioned in the documents",
    "there is no document",
)


@dataclass(frozen=True)
class AnswerRecord:
    """One variant's answer to one hold-out item, with what its prompt showed."""

    item_id: str
    question: str
    answer: str
    oracle: tuple[str, ...] = ()
    documents: tuple[str, ...] = ()
    finish_reason: str | None = None


@dataclass(frozen=True)
class Finding:
    """One failure mode of one answer, and what shows it."""

    mode: str
    detail: str


def _norm(text: str) -> str:
    return " ".join(words(text))


def _has_phrase(text: str, phrases: Sequence[str]) -> str | None:
    padded = f" {_norm(text)} "
    return next((p for p in phrases if f" {_norm(p)} " in padded), None)


def repetition(answer: str) -> Finding | None:
    """The shortest-period loop that covers enough of the answer (module rules), if any."""
    tokens = words(answer)
    if len(tokens) < LOOP_MIN_WORDS:
        return None
    for period in range(1, min(LOOP_MAX_PERIOD, len(tokens) // 2) + 1):
        run, longest, end = 0, 0, 0
        for j in range(period, len(tokens)):
            run = run + 1 if tokens[j] == tokens[j - period] else 0
            if run > longest:
                longest, end = run, j
        stretch = longest + period
        repeats = 3 if period < 4 else 2
        if stretch >= repeats * period and stretch >= LOOP_MIN_SHARE * len(tokens):
            start = end - stretch + 1
            gram = " ".join(tokens[start : start + period])
            return Finding("repetition", f'"{gram}" x{stretch / period:.1f} over {stretch} words')
    return None


def quotes(answer: str) -> list[str]:
    """The quoted spans of an answer; one left open runs to the next quote, `Answer:` or the end."""
    return [q.strip() for q in _QUOTE.findall(answer) if words(q)]


def quote_findings(record: AnswerRecord) -> list[Finding]:
    """`quote_missing`, `quote_invented` and `quote_off_oracle` (module rules)."""
    spans = quotes(record.answer)
    if not spans:
        return [Finding("quote_missing", "no quote")] if record.oracle else []
    oracle = [_norm(c) for c in record.oracle]
    shown = [_norm(c) for c in record.documents]
    found = []
    for span in spans:
        text = _norm(span)
        if any(text in c for c in oracle):
            continue
        mode = "quote_off_oracle" if any(text in c for c in shown) else "quote_invented"
        found.append(Finding(mode, _excerpt(span)))
    return found


def values(text: str) -> set[tuple[str, str]]:
    """(kind, value) of the numbers, years, months and weekdays in `text`."""
    lowered = _DOCUMENT_NUMBER.sub(" ", text.lower())
    out = set()
    for token in _DIGITS.findall(lowered):
        token = re.sub(r"(st|nd|rd|th)$", "", token)
        if re.fullmatch(r"\d{1,3}(,\d{3})+", token):
            token = token.replace(",", "")
        token = re.sub(r":00$", "", token)
        if re.fullmatch(r"\d+", token):
            token = str(int(token))
        kind = "year" if re.fullmatch(r"(19|20)\d\d", token) else "number"
        out.add((kind, token))
    for word in words(lowered):
        if word in _NUMBER_WORDS:
            out.add(("number", _NUMBER_WORDS[word]))
        elif word in _MONTHS:
            out.add(("month", word))
        elif word in _WEEKDAYS:
            out.add(("weekday", word))
    return out


def _source_values(text: str) -> set[tuple[str, str]]:
    """`values`, with "one" read as 1: on the oracle's and question's side only."""
    found = values(text)
    return found | {("number", "1")} if "one" in words(text) else found


def number_finding(record: AnswerRecord) -> Finding | None:
    """Values of the final answer that contradict the oracle (module rules), if any."""
    oracle = _source_values(" ".join(record.oracle))
    kinds = {kind for kind, _ in oracle}
    allowed = oracle | _source_values(record.question)
    answered = values(final_answer(record.answer))
    wrong = sorted(v for k, v in answered if k in kinds and (k, v) not in allowed)
    if not wrong:
        return None
    shown = ", ".join(sorted(v for _, v in oracle))
    return Finding("number_contradicts", f"answer {', '.join(wrong)}; oracle {shown}")


def refusal_finding(answer: str) -> Finding | None:
    """An empty answer, an empty final answer, or a refusal phrase, if any."""
    if not words(answer):
        return Finding("refusal_or_empty", "empty answer")
    if ANSWER_MARKER in answer and not words(answer.rsplit(ANSWER_MARKER, 1)[1]):
        return Finding("refusal_or_empty", f"nothing after {ANSWER_MARKER!r}")
    phrase = _has_phrase(answer, _REFUSALS)
    return Finding("refusal_or_empty", f'says "{phrase}"') if phrase else None


def classify(record: AnswerRecord) -> list[Finding]:
    """Every failure mode `record` shows, in `MODES` order."""
    found = [repetition(record.answer), *quote_findings(record), number_finding(record)]
    found.append(refusal_finding(record.answer))
    claimed = _has_phrase(record.answer, _NO_DOCUMENT) if record.oracle else None
    if claimed:
        found.append(Finding("no_document_claimed", f'says "{claimed}"'))
    if record.finish_reason == "length":
        found.append(Finding("cut_by_limit", "ended at max_new_tokens"))
    if not record.oracle:
        found.append(Finding("oracle_not_retrieved", "no oracle chunk in the prompt"))
    order = list(MODES)
    return sorted((f for f in found if f is not None), key=lambda f: order.index(f.mode))


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


def analyse(records: Sequence[AnswerRecord]) -> dict[str, dict[str, Any]]:
    """Per mode: how many answers show it, their share, and the first `EXAMPLES` of them.

    An answer counts once per mode (its first finding of that mode is its example's detail).
    """
    modes: dict[str, dict[str, Any]] = {
        m: {"count": 0, "share": 0.0, "examples": []} for m in MODES
    }
    for record in records:
        seen: set[str] = set()
        for finding in classify(record):
            if finding.mode in seen:
                continue
            seen.add(finding.mode)
            entry = modes[finding.mode]
            entry["count"] += 1
            if len(entry["examples"]) < EXAMPLES:
                entry["examples"].append(
                    {
                        "item_id": record.item_id,
                        "question": _excerpt(record.question),
                        "answer": _excerpt(record.answer),
                        "detail": finding.detail,
                    }
                )
    for entry in modes.values():
        entry["share"] = round(entry["count"] / len(records), 4) if records else 0.0
    return modes


def records_of(result: Mapping[str, Any], variant: str) -> list[AnswerRecord]:
    """The hold-out answers of `variant` in an evaluation result (`scores.json`)."""
    answers = result["variants"][variant]
    outputs = answers["outputs"]
    reasons = answers.get("finish_reasons") or [None] * len(outputs)
    records = []
    for item, output, reason in zip(result["items"], outputs, reasons, strict=True):
        if item["set"] != "holdout":
            continue
        asked = (m["content"] for m in reversed(item["messages"]) if m["role"] == "user")
        question = item.get("question") or next(asked, "")
        records.append(
            AnswerRecord(
                item_id=item["item_id"],
                question=question,
                answer=output,
                oracle=tuple(item.get("oracle") or ()),
                documents=tuple(item.get("documents") or ()),
                finish_reason=reason,
            )
        )
    return records


def error_analysis(result: Mapping[str, Any], columns: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The error analysis of an evaluation result for the report.

    Args:
        result: the evaluation's `scores.json`.
        columns: (label, variant name) per column, e.g. ("base", "base"), ("candidate", ...).
    """
    analysed = [(label, name, records_of(result, name)) for label, name in columns]
    return {
        "items": len(analysed[0][2]) if analysed else 0,
        "max_new_tokens": result.get("max_new_tokens"),
        "modes": dict(MODES),
        "columns": [
            {"label": label, "variant": name, "modes": analyse(records)}
            for label, name, records in analysed
        ],
    }


def error_counts(analysis: Mapping[str, Any] | None, label: str) -> dict[str, float]:
    """`holdout.errors.<mode>` counts of one column, for the run's metrics (none if absent)."""
    for column in (analysis or {}).get("columns", []):
        if column["label"] == label:
            return {
                f"{HOLDOUT_ERRORS_PREFIX}{mode}": float(entry["count"])
                for mode, entry in column["modes"].items()
            }
    return {}
