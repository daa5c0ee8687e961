"""PII redaction with Presidio's analyzer and anonymizer, configured to run fully offline.

No spaCy NER model can be installed here (spaCy models are not on PyPI; only unofficial
re-uploads are), so the analyzer runs on a blank spaCy tokenizer with Presidio's pattern
recognizers, which validate checksums where the type has one (Luhn for cards, mod-97 for IBAN),
plus our own recognizers for credentials. The replacement itself is a plain splice: Presidio's
anonymizer merges adjacent spans of one type (two keys on a line became one placeholder),
which breaks one-placeholder-per-value. Person names and postal addresses need NER and are
therefore not detected. Replacements are typed placeholders (`<EMAIL_1>`), numbered per
interaction; keyed hashes of the raw values keep numbering consistent across a chat and its
later feedback without storing the values themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import spacy
import tldextract
from presidio_analyzer import (
    AnalyzerEngine,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import SlimSpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UkNinoRecognizer,
    UsSsnRecognizer,
)
from typing_extensions import override

LABELS: dict[str, str] = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP",
    "US_SSN": "NATIONAL_ID",
    "UK_NINO": "NATIONAL_ID",
    "SECRET": "SECRET",
}
"""Presidio entity -> our placeholder label (also the `pii_types` value)."""

_ASSIGNED = (
    r"(?<=\b(?:password|passwd|pwd|passphrase|secret|token|api[_-]?key|access[_-]?key|"
    r"client[_-]?secret|auth[_-]?token)[\"']?\s{0,3}[:=]\s{0,3}[\"']?)[^\s\"',;]{4,}"
)
SECRET_PATTERNS: tuple[tuple[str, str, bool], ...] = (
    # Each entry: name, pattern, whether it is case-sensitive.
    ("openai_key", r"\bsk-(?:proj-|svcacct-|live-|test-)?[A-Za-z0-9_\-]{16,}", True),
    ("stripe_key", r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}\b", True),
    ("aws_access_key_id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", True),
    ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{30,}\b", True),
    ("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}", True),
    ("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}\b", True),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", True),
    ("bearer_token", r"(?<=\bbearer\s{1,3})[A-Za-z0-9\-._~+/]{12,}=*", False),
    ("assigned_secret", _ASSIGNED, False),
    ("password_phrase", r"(?<=\bpassword\s(?:is|was)\s{1,3}[\"']?)[^\s\"',;]{4,}", False),
    (
        "private_key",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----",
        True,
    ),
)


# Every recognizer needs one of these to match; text with none skips the analyzer entirely
# (most chat text has no PII, and the analyzer costs about a millisecond per text).
MAY_HOLD_PII = re.compile(
    r"[\d@]|[0-9a-f]{0,4}::?[0-9a-f]{1,4}:|sk-|[rs]k_|gh[pousr]_|xox|eyj|aiza|akia|asia|bearer"
    r"|pass|pwd|secret|token|key",
    re.IGNORECASE,
)


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer, validating domains against tldextract's bundled list.

    The stock recognizer downloads the public-suffix list on first use, which fails offline.
    """

    _extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    @override
    def validate_result(self, pattern_text: str) -> bool:
        return self._extract(pattern_text).fqdn != ""


class BlankSpacyNlpEngine(SlimSpacyNlpEngine):
    """Tokenization only, from `spacy.blank`: no model download, no NER."""

    @override
    def load(self) -> None:
        self.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]  # untyped in presidio


def secret_recognizers() -> list[PatternRecognizer]:
    """Recognizers for API keys, tokens, passwords and private keys."""
    out = []
    for name, regex, case_sensitive in SECRET_PATTERNS:
        flags = re.DOTALL | re.MULTILINE | (0 if case_sensitive else re.IGNORECASE)
        out.append(
            PatternRecognizer(
                supported_entity="SECRET",
                name=f"secret_{name}",
                patterns=[Pattern(name, regex, 0.9)],
                global_regex_flags=flags,
            )
        )
    return out


def build_analyzer() -> AnalyzerEngine:
    """An AnalyzerEngine with the offline recognizers for every supported PII type."""
    engine = BlankSpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.load()
    registry = RecognizerRegistry(
        recognizers=[
            OfflineEmailRecognizer(),
            PhoneRecognizer(),
            CreditCardRecognizer(),
            IbanRecognizer(),
            IpRecognizer(),
            UsSsnRecognizer(),
            UkNinoRecognizer(),
            *secret_recognizers(),
        ],
        supported_languages=["en"],
    )
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


@dataclass
class Redactor:
    """Finds and replaces PII; one instance per process (the analyzer is costly to build)."""

    hash_key: bytes
    threshold: float = 0.35
    analyzer: AnalyzerEngine = field(default_factory=build_analyzer)

    def session(self, scope: str, known: dict[str, str] | None = None) -> RedactionSession:
        """A redaction session for one interaction (`scope`), seeded with earlier placeholders."""
        return RedactionSession(self, scope, dict(known or {}))

    def find(self, text: str) -> list[RecognizerResult]:
        """PII spans in `text`, as Presidio results."""
        if not text or not MAY_HOLD_PII.search(text):
            return []
        found = self.analyzer.analyze(text, language="en", score_threshold=self.threshold)
        return [r for r in found if r.entity_type in LABELS]


@dataclass
class RedactionSession:
    """Placeholders for one interaction: the same value always gets the same placeholder."""

    redactor: Redactor
    scope: str
    mapping: dict[str, str]
    types: set[str] = field(default_factory=set)

    def _digest(self, label: str, value: str) -> str:
        msg = f"{self.scope}\x00{label}\x00{value}".encode()
        return hmac.new(self.redactor.hash_key, msg, hashlib.sha256).hexdigest()[:32]

    def placeholder(self, label: str, value: str) -> str:
        """The placeholder for `value`, assigning the next number of its type when new."""
        digest = self._digest(label, value)
        if digest not in self.mapping:
            used = sum(1 for p in self.mapping.values() if p.startswith(f"<{label}_"))
            self.mapping[digest] = f"<{label}_{used + 1}>"
        self.types.add(label)
        return self.mapping[digest]

    def redact(self, text: str) -> str:
        """`text` with every PII span replaced by its placeholder."""
        results = _without_overlaps(self.redactor.find(text))
        if not results:
            return text
        parts: list[str] = []
        cursor = 0
        for r in results:  # reading order, so the first value of a type gets number 1
            parts += [
                text[cursor : r.start],
                self.placeholder(LABELS[r.entity_type], text[r.start : r.end]),
            ]
            cursor = r.end
        parts.append(text[cursor:])
        return "".join(parts)

    def redact_all(self, texts: Iterable[str]) -> list[str]:
        """Redact several texts in this session."""
        return [self.redact(t) for t in texts]


def _without_overlaps(results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Keep the longest (then highest-scoring) span wherever spans overlap, in text order."""
    ranked = sorted(results, key=lambda r: (-(r.end - r.start), -r.score, r.start))
    kept: list[RecognizerResult] = []
    for r in ranked:
        if all(r.end <= k.start or r.start >= k.end for k in kept):
            kept.append(r)
    return sorted(kept, key=lambda r: r.start)
