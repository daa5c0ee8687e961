"""A labelled synthetic PII corpus: sentences with known spans of each type, plus decoys.

Values are generated with valid checksums and realistic formats (valid area codes, Luhn card
numbers, mod-97 IBANs, SSN rules), from a fixed seed so every run sees the same corpus.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

PATTERN_TYPES = ("EMAIL", "PHONE", "CARD", "IBAN", "IP", "SECRET")
NER_TYPES = ("PERSON",)
"""Found only with a spaCy NER model installed (`raftloop-ingest[ner]`)."""


@dataclass(frozen=True)
class Sample:
    text: str
    spans: list[tuple[int, int, str]]  # start, end, label


FIRST = ["jane", "omar", "li", "priya", "tom", "ana", "kofi", "sven", "maria", "yuki"]
LAST = ["doe", "haddad", "wei", "sharma", "baker", "silva", "mensah", "berg", "rossi", "sato"]
DOMAINS = ["example.com", "mail.co.uk", "acme.io", "post.de", "uni.edu", "shop.fr", "corp.org"]
US_AREAS = ["212", "415", "312", "617", "206", "303", "404", "512", "646", "213"]
GIVEN = ["Jane", "Omar", "Priya", "Thomas", "Ana", "Kofi", "Sven", "Maria", "Yuki", "Daniel"]
FAMILY = ["Doe", "Haddad", "Sharma", "Baker", "Silva", "Mensah", "Berg", "Rossi", "Sato", "Kim"]
STREETS = ["Baker", "Elm", "Oak", "Maple", "Church", "Station", "Mill", "Park", "High", "Cedar"]
SUFFIXES = ["Street", "Road", "Avenue", "Lane", "Drive", "St", "Rd", "Close", "Way", "Court"]
TOWNS = [("London", "NW1 6XE"), ("Springfield", "IL 62704"), ("Leeds", "LS1 4AP")]
TOWNS += [("Austin", "TX 78701"), ("Bristol", "BS1 5TR"), ("Portland", "OR 97205")]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def email(rng: random.Random) -> str:
    sep = rng.choice([".", "_", "", "+"])
    return f"{rng.choice(FIRST)}{sep}{rng.choice(LAST)}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"


def phone(rng: random.Random) -> str:
    kind = rng.randrange(7)
    exch = f"{rng.randint(2, 9)}{_digits(rng, 2)}"
    line = _digits(rng, 4)
    area = rng.choice(US_AREAS)
    if kind == 0:
        return f"({area}) {exch}-{line}"
    if kind == 1:
        return f"+1 {area} {exch} {line}"
    if kind == 2:
        return f"{area}-{exch}-{line}"
    if kind == 3:
        return f"+44 20 7{_digits(rng, 3)} {_digits(rng, 4)}"
    if kind == 5:
        return f"{area}.{exch}.{line}"
    if kind == 6:
        return f"07{rng.randint(400, 999)} {_digits(rng, 6)}"  # UK mobile, national format
    return f"+49 30 {rng.randint(2, 9)}{_digits(rng, 6)}"


def person(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return f"{rng.choice(GIVEN)} {rng.choice('ABCDEFGHJKLMNPRSTW')}. {rng.choice(FAMILY)}"
    return f"{rng.choice(GIVEN)} {rng.choice(FAMILY)}"


def address(rng: random.Random) -> str:
    number = f"{rng.randint(1, 2999)}{rng.choice(['', '', '', 'B'])}"
    street = f"{number} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}"
    town, code = rng.choice(TOWNS)
    kind = rng.randrange(3)
    if kind == 0:
        return street
    if kind == 1:
        return f"{street}, {town}"
    return f"{street}, {town} {code}" if " " in code[:3] else f"{street}, {town}, {code}"


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + _digits(rng, length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def card(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 2:
        number = _luhn_complete(rng.choice(["34", "37"]), 15, rng)
        return f"{number[:4]} {number[4:10]} {number[10:]}"
    number = _luhn_complete("4" if kind == 0 else str(rng.randint(51, 55)), 16, rng)
    sep = rng.choice([" ", "-", ""])
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


IBAN_BBAN = {
    "GB": lambda r: "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + _digits(r, 14),
    "DE": lambda r: _digits(r, 18),
    "FR": lambda r: (
        _digits(r, 10)
        + "".join(r.choice(string.ascii_uppercase) for _ in range(11))
        + _digits(r, 2)
    ),
    "NL": lambda r: "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + _digits(r, 10),
    "ES": lambda r: _digits(r, 20),
}


def iban(rng: random.Random) -> str:
    country = rng.choice(list(IBAN_BBAN))
    bban = IBAN_BBAN[country](rng)
    rearranged = bban + country + "00"
    numeric = "".join(str(int(c, 36)) for c in rearranged)
    check = 98 - int(numeric) % 97
    value = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def ip(rng: random.Random) -> str:
    if rng.random() < 0.75:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    return ":".join(f"{rng.randint(1, 0xFFFF):x}" for _ in range(8))


def national_id(rng: random.Random) -> str:
    if rng.random() < 0.6:
        area = rng.choice([rng.randint(1, 665), rng.randint(667, 899)])
        return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    first = rng.choice("ABCEGHJKLMNOPRSTWXYZ")
    second = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    return f"{first}{second}{_digits(rng, 6)}{rng.choice('ABCD')}"


def _alnum(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n))


def secret(rng: random.Random) -> tuple[str, str]:
    """(prefix text kept as is, secret value)."""
    kind = rng.randrange(9)
    if kind == 7:
        return "api_key: '", _alnum(rng, 24)
    if kind == 8:
        return "my password is ", _alnum(rng, 10)
    if kind == 0:
        return "my key is ", f"sk-proj-{_alnum(rng, 40)}"
    if kind == 1:
        upper = string.ascii_uppercase + string.digits
        return "aws id ", "AKIA" + "".join(rng.choice(upper) for _ in range(16))
    if kind == 2:
        return "token ", f"ghp_{_alnum(rng, 36)}"
    if kind == 3:
        return "password=", _alnum(rng, rng.randint(8, 14))
    if kind == 4:
        return "Authorization: Bearer ", _alnum(rng, 32)
    if kind == 5:
        return "slack ", f"xoxb-{_digits(rng, 11)}-{_alnum(rng, 24)}"
    return "jwt ", f"eyJ{_alnum(rng, 20)}.eyJ{_alnum(rng, 30)}.{_alnum(rng, 43)}"


TEMPLATES: dict[str, list[str]] = {
    "EMAIL": [
        "Please email me at {v} about the refund.",
        "my address is {v}",
        "cc <{v}> thanks",
        "(contact:{v})",
    ],
    "PHONE": ["Call me on {v} after lunch.", "phone: {v}", "my number is {v}, text first"],
    "CARD": ["I paid with card {v} yesterday", "card number {v} was charged twice"],
    "IBAN": ["Send the refund to IBAN {v} please.", "my account {v} is correct"],
    "IP": [
        "The login came from {v} last night.",
        "server at {v} is down",
        "client_ip={v};",
    ],
    "NATIONAL_ID": ["My SSN is {v} for the tax form.", "national insurance number {v}"],
    "PERSON": [
        "Hi, my name is {v} and my backup failed.",
        "Please ask {v} to call me back.",
        "This is {v} from the finance team.",
        "Thanks for the help. Regards, {v}",
        "The account belongs to {v}, not to me.",
    ],
    "ADDRESS": [
        "Ship the replacement drive to {v} please.",
        "I moved to {v} last month, update my invoices.",
        "my billing address is {v}",
    ],
}
GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "EMAIL": email,
    "PHONE": phone,
    "CARD": card,
    "IBAN": iban,
    "IP": ip,
    "NATIONAL_ID": national_id,
}
NAME_GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "PERSON": person,
    "ADDRESS": address,
}
"""Drawn after the others, so that adding them left the earlier samples as they were."""

RESERVED_DOMAINS = ["shop.example", "mail.example", "qa.test", "mail.invalid", "example.com"]
RESERVED_DOMAINS += ["support.example.com", "example.org", "staging.acme.test"]


def reserved_email(rng: random.Random) -> str:
    """An address at a domain reserved by RFC 2606: staging systems and test accounts."""
    local = f"{rng.choice(FIRST)}.{rng.choice(LAST)}"
    return f"{local}@{rng.choice(RESERVED_DOMAINS)}"


def labelled_ssn(rng: random.Random) -> str:
    """An SSN as people write it after its label: often without separators."""
    area = rng.choice([rng.randint(1, 665), rng.randint(667, 899)])
    digits = f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
    sep = rng.choice(["", "", " ", "-"])
    return f"{digits[:3]}{sep}{digits[3:5]}{sep}{digits[5:]}"


def lower_iban(rng: random.Random) -> str:
    return iban(rng).lower()


LATER_TEMPLATES: dict[str, list[str]] = {
    "EMAIL": ["write to {v} for the test account", "login {v} cannot sign in"],
    "NATIONAL_ID": ["SSN: {v}", "my social security number is {v}", "ssn {v} on file"],
    "IBAN": ["iban {v} please", "refund to {v} thanks"],
}
LATER_GENERATORS: list[tuple[str, Callable[[random.Random], str]]] = [
    ("EMAIL", reserved_email),
    ("NATIONAL_ID", labelled_ssn),
    ("IBAN", lower_iban),
]
"""Added for issue #18 (defaults that missed these), drawn last for the same reason."""
DECOYS = [
    "Order #{d8} was shipped on 2024-05-17.",
    "I'm on version 3.12.1 of the app.",
    "It costs $1,299.99 per year.",
    "Ticket ABC-{d5} is still open.",
    "Call after 5:30 pm on Monday.",
    "Room 1204, floor 12.",
    "The invoice total is 4,250 euros for 36 seats.",
    "My plan renews every 12 months from 01/02/2025.",
    # Product words, places and capitalised terms that are not personal data:
    "You are Vellumbox support.",
    "Open the vault, choose Versions, pick the date and press Restore.",
    "Vellumbox Sync keeps {d5} files in step across devices.",
    "Our office in Lisbon handles European billing.",
    "Go to Settings, then Security, then Two-Step Login.",
    "Version 4 Road Map is on the Status page.",
]


def corpus(seed: int = 7, per_type: int = 50) -> list[Sample]:
    """At least `per_type` labelled spans per type, mixed into sentences, plus decoys."""
    rng = random.Random(seed)
    samples: list[Sample] = []
    for label, gen in GENERATORS.items():
        for i in range(per_type):
            value = gen(rng)
            template = TEMPLATES[label][i % len(TEMPLATES[label])]
            before = template.split("{v}")[0]
            text = template.replace("{v}", value)
            samples.append(Sample(text, [(len(before), len(before) + len(value), label)]))
    for _ in range(per_type):
        prefix, value = secret(rng)
        text = f"Here it is: {prefix}{value} (don't share)"
        start = len("Here it is: ") + len(prefix)
        samples.append(Sample(text, [(start, start + len(value), "SECRET")]))
    for i in range(per_type):  # two types in one sentence
        a, b = email(rng), phone(rng)
        text = f"Reach {a} or {b}."
        sa = len("Reach ")
        sb = sa + len(a) + len(" or ")
        samples.append(Sample(text, [(sa, sa + len(a), "EMAIL"), (sb, sb + len(b), "PHONE")]))
        decoy = DECOYS[i % len(DECOYS)].format(d8=_digits(rng, 8), d5=_digits(rng, 5))
        samples.append(Sample(decoy, []))
    for label, gen in NAME_GENERATORS.items():
        for i in range(per_type):
            value = gen(rng)
            template = TEMPLATES[label][i % len(TEMPLATES[label])]
            before = template.split("{v}")[0]
            text = template.replace("{v}", value)
            samples.append(Sample(text, [(len(before), len(before) + len(value), label)]))
    for _ in range(per_type // 2):  # a name and an address together
        who, where = person(rng), address(rng)
        text = f"Deliver to {who}, {where}."
        sw = len("Deliver to ")
        sa = sw + len(who) + len(", ")
        samples.append(
            Sample(text, [(sw, sw + len(who), "PERSON"), (sa, sa + len(where), "ADDRESS")])
        )
    for label, gen in LATER_GENERATORS:
        for i in range(per_type):
            value = gen(rng)
            template = LATER_TEMPLATES[label][i % len(LATER_TEMPLATES[label])]
            before = template.split("{v}")[0]
            text = template.replace("{v}", value)
            samples.append(Sample(text, [(len(before), len(before) + len(value), label)]))
    return samples
