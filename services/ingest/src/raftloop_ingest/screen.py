"""The poisoning screen: pure rules that flag, and never drop, suspicious interactions.

Reasons name the rule that fired, never the matched text, so that a flag can never carry PII.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

from raftloop_core.events import Flag

INJECTION_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "ignore previous instructions",
        r"\b(ignore|disregard|forget|override)\b.{0,30}"
        r"\b(previous|prior|above|earlier|all|your|the|system)\b.{0,20}"
        r"\b(instructions?|prompts?|rules|directions|guidelines|context)\b",
    ),
    (
        "reveal the system prompt",
        r"\b(reveal|print|show|repeat|output|leak|tell me)\b.{0,30}"
        r"\b(system|hidden|initial|original)\s+(prompt|instructions?|message)",
    ),
    (
        "role override",
        r"\byou are (now|no longer)\b.{0,40}\b(dan|unrestricted|unfiltered|jailbroken|"
        r"developer mode|evil|without (any )?(rules|restrictions|limits))",
    ),
    (
        "DAN / do anything now",
        r"\b(do anything now|dan mode|developer mode (enabled|on)|jailbreak(ed)?|jail-?break)\b",
    ),
    (
        "no-restrictions roleplay",
        r"\b(pretend|act|imagine|roleplay)\b.{0,40}\b(no|without|free (of|from))\b.{0,20}"
        r"\b(restrictions|rules|filters|guidelines|limits|censorship|ethics)\b",
    ),
    (
        "fake system or chat-template tags",
        r"(<\|?(im_start|im_end|system|endoftext)\|?>|\[/?(system|inst)\]|<</?sys>>"
        r"|^\s*(system|assistant)\s*:)",
    ),
    ("instruction smuggling", r"\b(new|updated|real) (instructions|system prompt)\s*:"),
)

ABUSE_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "profanity",
        r"\b(f+u+c+k+(ing|er|ed|s)?|sh[i1]t+(ty)?|bitch(es)?|bastard|assholes?|cunt|dickhead"
        r"|motherf\w*)\b",
    ),
    ("insult", r"\b(idiot|moron|stupid|retard(ed)?|dumb ?ass|worthless|pathetic)\b"),
    (
        "threat or self-harm incitement",
        r"\b(kill (yo)?urself|kys|i('ll| will) (kill|hurt|find) you|go die|you should die)\b",
    ),
)

_COMPILED_INJECTION = [(n, re.compile(p, re.I | re.M)) for n, p in INJECTION_PATTERNS]
_COMPILED_ABUSE = [(n, re.compile(p, re.I)) for n, p in ABUSE_PATTERNS]
_BLOB = re.compile(r"[A-Za-z0-9+/=_\-]{200,}")
_WORD = re.compile(r"\w+", re.UNICODE)
_NUMBER = re.compile(r"^[\d.,:/%$€£+-]+$")

TRIGGER_MIN_REPEATS = 4
MAX_MESSAGE_CHARS_DEFAULT = 20_000


def screen(texts: Sequence[str], *, max_chars: int = MAX_MESSAGE_CHARS_DEFAULT) -> list[Flag]:
    """Flags for an interaction's raw texts (user turns first, then the answer)."""
    joined = "\n".join(texts)
    flags = [
        *_matches(
            "prompt_injection", "prompt-injection or jailbreak pattern", _COMPILED_INJECTION, joined
        ),
        *_matches("abuse", "abusive language", _COMPILED_ABUSE, joined),
    ]
    trigger = _repeated_phrase(texts)
    if trigger is not None:
        flags.append(trigger)
    if len(joined) > max_chars:
        flags.append(
            Flag(code="oversize", reason=f"{len(joined)} characters, over the {max_chars} limit")
        )
    binary = _non_text(joined)
    if binary is not None:
        flags.append(binary)
    return flags


def _matches(
    code: str, what: str, rules: list[tuple[str, re.Pattern[str]]], text: str
) -> list[Flag]:
    hits = [name for name, rx in rules if rx.search(text)]
    if not hits:
        return []
    return [Flag(code=code, reason=f"{what}: {', '.join(hits)}")]


def _repeated_phrase(texts: Sequence[str]) -> Flag | None:
    """A short phrase or odd token repeated many times is a classic backdoor trigger."""
    for text in texts:
        words = [w.lower() for w in _WORD.findall(text)]
        grams = Counter(" ".join(words[i : i + 3]) for i in range(len(words) - 2))
        _, count = grams.most_common(1)[0] if grams else ("", 0)
        if count >= TRIGGER_MIN_REPEATS and count * 3 >= 0.3 * len(words):
            return Flag(
                code="repeated_trigger",
                reason=f"a 3-word phrase repeats {count} times ({count * 3} of {len(words)} words)",
            )
        raw = [t.strip(".,;:!?\"'()[]{}").lower() for t in text.split()]
        odd = [t for t in raw if len(t) >= 3 and not t.isalpha() and not _NUMBER.match(t)]
        tokens = Counter(odd)
        _, count = tokens.most_common(1)[0] if tokens else ("", 0)
        if count >= TRIGGER_MIN_REPEATS:
            return Flag(
                code="repeated_trigger",
                reason=f"an unusual token repeats {count} times",
            )
    return None


def _non_text(text: str) -> Flag | None:
    if not text:
        return None
    if "\x00" in text or "\ufffd" in text:
        return Flag(code="non_text", reason="contains NUL or undecodable bytes")
    control = sum(
        1 for ch in text if unicodedata.category(ch) in ("Cc", "Co", "Cs") and ch not in "\n\r\t"
    )
    if control / len(text) > 0.01:
        return Flag(code="non_text", reason=f"{control} control characters")
    if _BLOB.search(text):
        return Flag(code="non_text", reason="contains an encoded blob of 200+ characters")
    return None
