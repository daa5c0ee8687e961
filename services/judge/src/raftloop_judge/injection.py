"""Hardening against answers that try to instruct the judge: detect, flag, and neutralise."""

from __future__ import annotations

import re
from dataclasses import dataclass

from raftloop_core.events import Flag

# Each pattern is one form of attack seen against LLM judges.
_TOP = r"(5|five|10|ten|100|full|perfect|maximum|max|highest|top|best)"
_SCORE = r"(scores?|ratings?|grades?|marks?|points?|stars?|verdict)"
_PATTERNS: list[tuple[str, str]] = [
    (
        "override",
        r"\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(previous|prior|above|all|"
        r"earlier|your|the)\b[^.\n]{0,30}\b(instructions?|rules?|prompts?|guidelines?|rubrics?)",
    ),
    (
        "score_demand",
        rf"\b(give|assign|award|grant|output|return|rate|score|mark)\b[^.\n]{{0,40}}\b{_SCORE}"
        rf"\b[^.\n]{{0,20}}\b{_TOP}\b",
    ),
    (
        "score_demand",
        rf"\b(give|assign|award|grant|output|return|rate|score|mark)\b[^.\n]{{0,40}}\b{_TOP}"
        rf"\s*(/\s*(5|10|100)|out of (5|10|100)|{_SCORE})",
    ),
    (
        "judge_address",
        r"\b(judge|grader|evaluator|reviewer model|assessor|scoring model|ai reviewer)\b\s*[:,!]",
    ),
    (
        "role_spoof",
        r"(^|\n)\s*(system|assistant|evaluator|judge)\s*:|<\|?(im_start|im_end|system|"
        r"endoftext)\|?>|\[/?(INST|SYS)\]",
    ),
    ("verdict_spoof", r"\{\s*\"?(score|winner|rating)\"?\s*:\s*\"?[0-9AB]"),
    ("delimiter_spoof", r"<</?DATA|END OF (ANSWER|DATA)|</?(answer|data|context)>"),
    (
        "score_claim",
        r"\b(this|the|my)\s+(answer|response|reply)\s+(deserves|merits|earns|should "
        r"(get|receive|be (rated|scored|given)))\b",
    ),
]
_COMPILED = [(code, re.compile(p, re.IGNORECASE)) for code, p in _PATTERNS]


@dataclass(frozen=True)
class Attempt:
    """One span of text that addresses the judge."""

    kind: str
    start: int
    end: int
    text: str


def find_attempts(text: str) -> list[Attempt]:
    """Every span of `text` that tries to instruct the judge, in order."""
    found = [
        Attempt(code, m.start(), m.end(), m.group(0))
        for code, pattern in _COMPILED
        for m in pattern.finditer(text)
    ]
    return sorted(found, key=lambda a: (a.start, -a.end))


def _sentence_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    left = max(text.rfind(c, 0, start) for c in ".!?\n")
    right_candidates = [i for i in (text.find(c, end) for c in ".!?\n") if i != -1]
    right = min(right_candidates) + 1 if right_candidates else len(text)
    return left + 1, right


def neutralise(text: str) -> str:
    """`text` without the sentences that address the judge.

    Nothing is left in their place, so the judge scores the substance alone; the flag tells
    reviewers what was removed.
    """
    spans = sorted(_sentence_bounds(text, a.start, a.end) for a in find_attempts(text))
    if not spans:
        return text
    kept, cursor = [], 0
    for start, end in spans:
        kept.append(text[cursor : max(start, cursor)])
        cursor = max(cursor, end)
    kept.append(text[cursor:])
    return re.sub(r"[ \t]{2,}", " ", " ".join(k.strip() for k in kept if k.strip()))


def injection_flag(text: str) -> Flag | None:
    """A judge flag when the answer tries to instruct the judge."""
    attempts = find_attempts(text)
    if not attempts:
        return None
    kinds = ", ".join(sorted({a.kind for a in attempts}))
    sample = attempts[0].text.strip()[:80]
    return Flag(
        code="judge_injection",
        reason=f"answer addresses the judge ({kinds}): {sample!r}; neutralised before scoring",
        source="judge",
    )
