"""Constrained decoding on the real tokenizers: random logits, masked, must yield valid output.

The oracles are independent of the code under test: `json.loads` and `jsonschema` judge the
text, and a prefix that parses as a whole JSON object is exactly where EOS must be allowed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # ships no type information
import pytest
import torch
from transformers import AutoTokenizer

from raftloop_gateway.constrain import GrammarCache, Matcher
from raftloop_gateway.domain import Constraint, ToolSpec, UnsupportedSchema


@dataclass
class Model:
    tokenizer: Any
    cache: GrammarCache
    bias: torch.Tensor

    @property
    def eos(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))


def load(path: Path, vocab_size: int | None = None) -> Model:
    tokenizer = AutoTokenizer.from_pretrained(path)
    width = vocab_size or json.loads((path / "config.json").read_text())["vocab_size"]
    # Pure noise would almost never close a string or an array: a fixed lift for the tokens
    # that contain a closing character (and EOS) makes random outputs end within ~100 tokens.
    bias = torch.zeros(width)
    for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if any(c in piece for c in '"]}'):
            bias[i] = 3.0
    bias[tokenizer.eos_token_id] = 3.0
    return Model(tokenizer, GrammarCache(tokenizer, width), bias)


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path) -> Model:
    return load(smollm2_dir)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> Model:
    return load(tiny_model_dir)


@pytest.fixture(params=["smollm2", "tiny"])
def model(request: pytest.FixtureRequest) -> Model:
    chosen: Model = request.getfixturevalue(request.param)
    return chosen


def drive(model: Model, matcher: Matcher, *, seed: int, steps: int = 400) -> str:
    """Sample argmax of masked random logits until the matcher completes; the text made."""
    generator = torch.Generator().manual_seed(seed)
    out: list[int] = []
    for _ in range(steps):
        logits = torch.randn(model.cache.vocab_size, generator=generator) + model.bias
        matcher.mask(logits)
        token = int(logits.argmax())
        matcher.accept(token)
        if token == model.eos or matcher.terminated:
            if token != model.eos:
                out.append(token)
            return str(model.tokenizer.decode(out))
        out.append(token)
    raise AssertionError(f"no completion in {steps} tokens: {model.tokenizer.decode(out)!r}")


def feed(matcher: Matcher, ids: list[int]) -> None:
    for token in ids:
        matcher.accept(token)


STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def assert_compact(text: str) -> None:
    """No leading text and no whitespace outside strings but the single ", " and ": "."""
    assert text.startswith("{"), text
    skeleton = STRING.sub('""', text)
    assert not re.search(r"\s\s|[\n\r\t]|[^,:]\s", skeleton), text


SCHEMAS: dict[str, dict[str, Any]] = {
    "nested object": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 20},
                    "address": {
                        "type": "object",
                        "properties": {"city": {"type": "string", "maxLength": 20}},
                        "required": ["city"],
                    },
                },
                "required": ["name", "address"],
            }
        },
        "required": ["user"],
    },
    "enum": {
        "type": "object",
        "properties": {
            "status": {"enum": ["active", "inactive", "banned"]},
            "level": {"enum": [1, 2, 3, None]},
        },
        "required": ["status", "level"],
    },
    "array with minItems": {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 12},
                "minItems": 2,
                "maxItems": 4,
            }
        },
        "required": ["tags"],
    },
    "number bounds": {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 18, "maximum": 65},
            "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        },
        "required": ["age", "score"],
    },
    "required fields, closed object": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "note": {"type": "string"},
            "ok": {"type": "boolean"},
        },
        "required": ["id", "ok"],
        "additionalProperties": False,
    },
    "string pattern and lengths": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2,4}$"},
            "word": {"type": "string", "minLength": 3, "maxLength": 8},
        },
        "required": ["code", "word"],
    },
    "local $ref and anyOf": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "a": {"$ref": "#/$defs/point"},
            "b": {"anyOf": [{"$ref": "#/$defs/point"}, {"type": "null"}]},
        },
        "required": ["a", "b"],
    },
}


@pytest.mark.parametrize("name", SCHEMAS)
def test_json_schema_output_parses_and_validates(model: Model, name: str) -> None:
    schema = SCHEMAS[name]
    for seed in range(2):
        text = drive(model, model.cache.matcher(Constraint("json", schema)), seed=seed)
        jsonschema.validate(json.loads(text), schema)
        assert_compact(text)


def test_json_object_mode_yields_an_object(model: Model) -> None:
    for seed in range(3):
        text = drive(model, model.cache.matcher(Constraint("json")), seed=seed)
        assert isinstance(json.loads(text), dict)
        assert_compact(text)


def test_eos_is_allowed_exactly_when_the_object_is_complete(smollm2: Model) -> None:
    schema = SCHEMAS["required fields, closed object"]
    matcher = smollm2.cache.matcher(Constraint("json", schema))
    generator = torch.Generator().manual_seed(7)
    out: list[int] = []
    for _ in range(400):
        logits = torch.randn(smollm2.cache.vocab_size, generator=generator) + smollm2.bias
        logits[smollm2.eos] = -1e9  # never sampled, so every prefix is checked
        matcher.mask(logits)
        eos_allowed = bool(matcher.allowed()[smollm2.eos])
        try:
            json.loads(smollm2.tokenizer.decode(out))
            complete = True
        except json.JSONDecodeError:
            complete = False
        assert eos_allowed == complete == matcher.terminated
        if complete:
            assert matcher.allowed().nonzero()[0].tolist() == [smollm2.eos]
            matcher.accept(smollm2.eos)
            return
        token = int(logits.argmax())
        matcher.accept(token)
        out.append(token)
    raise AssertionError("the object never completed")


def test_padded_vocabulary_ids_are_never_allowed(tiny_model_dir: Path) -> None:
    model = load(tiny_model_dir, vocab_size=len(AutoTokenizer.from_pretrained(tiny_model_dir)) + 61)
    matcher = model.cache.matcher(Constraint("json"))
    assert not matcher.allowed()[len(model.tokenizer) :].any()
    assert isinstance(json.loads(drive(model, matcher, seed=0)), dict)


def test_a_token_outside_the_grammar_is_refused(smollm2: Model) -> None:
    matcher = smollm2.cache.matcher(Constraint("json"))
    with pytest.raises(ValueError, match="not allowed"):
        matcher.accept(smollm2.ids("Sure")[0])


TOOLS = (
    ToolSpec(
        "get_weather",
        "Weather in a city",
        {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "add",
        "Add two numbers",
        {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "minimum": 0, "maximum": 100},
                "b": {"type": "integer"},
            },
            "required": ["a", "b"],
        },
    ),
    ToolSpec("now", "The current time"),  # no parameters: arguments must be {}
)
CALLS = re.compile(r"<tool_call>(.*?)</tool_call>(?:\n<tool_call>(.*?)</tool_call>)*", re.S)


def parse_calls(text: str) -> list[dict[str, Any]]:
    assert CALLS.fullmatch(text), text
    calls = [json.loads(body) for body in re.findall(r"<tool_call>(.*?)</tool_call>", text, re.S)]
    schemas = {t.name: t.parameters or {"type": "object", "maxProperties": 0} for t in TOOLS}
    for call in calls:
        assert set(call) == {"name", "arguments"}, call
        jsonschema.validate(call["arguments"], schemas[call["name"]])
    return calls


def test_required_tool_calls_parse_and_validate(model: Model) -> None:
    names = set()
    for seed in range(6):
        matcher = model.cache.matcher(Constraint("tools", tools=TOOLS, tool_choice="required"))
        names |= {call["name"] for call in parse_calls(drive(model, matcher, seed=seed))}
    assert names <= {t.name for t in TOOLS}
    assert len(names) >= 2  # the alternatives are really open, not just the first tool


def test_named_tool_choice_forces_that_tool(model: Model) -> None:
    for seed in range(3):
        matcher = model.cache.matcher(Constraint("tools", tools=TOOLS, tool_choice="add"))
        calls = parse_calls(drive(model, matcher, seed=seed))
        assert calls
        assert {call["name"] for call in calls} == {"add"}


def test_without_parallel_calls_exactly_one_call_is_made(smollm2: Model) -> None:
    single = Constraint("tools", tools=TOOLS, tool_choice="required", parallel=False)
    for seed in range(4):
        assert len(parse_calls(drive(smollm2, smollm2.cache.matcher(single), seed=seed))) == 1
    matcher = smollm2.cache.matcher(single)
    feed(matcher, smollm2.ids('<tool_call>{"name": "now", "arguments": {}}</tool_call>'))
    logits = torch.zeros(smollm2.cache.vocab_size)
    matcher.mask(logits)
    assert logits[smollm2.eos] == 0  # the call is complete: EOS is allowed
    assert not bool(torch.isfinite(logits[smollm2.ids("\n")[0]]))  # a second call is not


def test_auto_permits_free_text_or_calls_but_not_other_markup(smollm2: Model) -> None:
    auto = Constraint("tools", tools=TOOLS, tool_choice="auto")
    text = smollm2.cache.matcher(auto)
    for token in smollm2.ids("It is sunny in Paris <b>today</b>."):
        assert not text.terminated
        text.accept(token)
    assert text.allowed()[smollm2.eos]

    call = smollm2.cache.matcher(auto)
    for token in smollm2.ids('<tool_call>{"name": "now", "arguments": {}}</tool_call>'):
        call.accept(token)
    assert call.allowed()[smollm2.eos]

    markup = smollm2.cache.matcher(auto)
    with pytest.raises(ValueError, match="not allowed"):
        feed(markup, smollm2.ids("<b>bold</b>"))

    required = smollm2.cache.matcher(Constraint("tools", tools=TOOLS, tool_choice="required"))
    with pytest.raises(ValueError, match="not allowed"):
        required.accept(smollm2.ids("It")[0])


REMOTE = "https://example.com/address.json"


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "'not'"),
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "'uniqueItems'"),
        ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, "'if'"),
        ({"type": "object", "properties": {"a": {"$ref": REMOTE}}}, REMOTE),
        ({"type": "string", "pattern": "(?<=a)b"}, "look-around"),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "oneOf"),
        ({"type": "strin"}, "not a valid JSON schema"),
        ({"type": "string", "maxLength": -1}, "not a valid JSON schema"),
    ],
)
def test_unsupported_or_invalid_schema_is_refused_by_name(
    smollm2: Model, schema: dict[str, Any], named: str
) -> None:
    with pytest.raises(UnsupportedSchema) as refused:
        smollm2.cache.compile(Constraint("json", schema))
    assert named in refused.value.message
    assert refused.value.param == "response_format"


def test_tool_with_unsupported_parameters_is_named(smollm2: Model) -> None:
    bad = ToolSpec("lookup", parameters={"type": "object", "propertyNames": {"maxLength": 3}})
    with pytest.raises(UnsupportedSchema, match="tool 'lookup' parameters uses 'propertyNames'"):
        smollm2.cache.compile(Constraint("tools", tools=(*TOOLS, bad)))
    with pytest.raises(UnsupportedSchema, match="'delete_all'") as unknown:
        smollm2.cache.compile(Constraint("tools", tools=TOOLS, tool_choice="delete_all"))
    assert unknown.value.param == "tool_choice"


def test_compiled_grammars_are_cached_per_key_and_bounded(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cache = GrammarCache(tokenizer, len(tokenizer), capacity=2)
    first = Constraint("json", SCHEMAS["enum"])
    compiled = cache.compile(first)
    assert cache.compile(Constraint("json", dict(SCHEMAS["enum"]))) is compiled
    cache.compile(Constraint("json", SCHEMAS["number bounds"]))
    cache.compile(Constraint("json"))
    assert cache.compile(first) is not compiled  # evicted as least recently used
