"""Constrained decoding: a `Constraint` becomes per-sequence token masks (llguidance).

`GrammarCache` turns a constraint into an llguidance grammar once per `constraint.key()` and
hands out a fresh `Matcher` per sequence; the engine masks each step's logits with it and
advances it with the sampled token. Why llguidance and not xgrammar: see the gateway README,
"Structured outputs".
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jsonschema  # type: ignore[import-untyped]  # ships no type information
import numpy as np
from llguidance import LLMatcher, LLTokenizer

from raftloop_gateway.domain import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    Constraint,
    ToolSpec,
    UnsupportedSchema,
)

if TYPE_CHECKING:
    import torch
    from llguidance._lib import JsonCompileOptions  # a TypedDict that exists in the stub only

CACHE_SIZE = 64

# Compact and bounded: the separators are exactly ", " and ": " and no other whitespace is
# allowed, because a small model given free whitespace loops on it. `lenient` stays off so an
# unimplemented keyword is an error rather than silently unenforced.
JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
    "lenient": False,
    "coerce_one_of": False,
}
_X_GUIDANCE = {"x-guidance": JSON_OPTIONS}

SUPPORTED = (
    "type, properties, required, additionalProperties, patternProperties, minProperties/"
    "maxProperties, items/prefixItems, minItems/maxItems, enum, const, anyOf, oneOf (disjoint "
    "branches), allOf, local $ref/$defs (recursion included), minimum/maximum (exclusive too), "
    "multipleOf, minLength/maxLength, pattern (no look-around), format"
)

NO_ARGUMENTS: Mapping[str, object] = {
    "type": "object",
    "properties": {},
    "additionalProperties": False,
}
"""OpenAI: omitting `parameters` defines a function with an empty parameter list."""

_UNIMPLEMENTED = re.compile(r"Unimplemented keys: \[([^\]]*)\]")


@dataclass(frozen=True)
class CompiledConstraint:
    """A constraint's grammar, checked against the tokenizer, ready to start matchers from."""

    key: str
    grammar: str
    initial: LLMatcher
    """A matcher in its start state; never advanced, only copied."""


class Matcher:
    """One sequence's position in its grammar: masks logits and follows sampled tokens."""

    def __init__(self, inner: LLMatcher, *, vocab_size: int, eos_token_id: int) -> None:
        self._inner = inner
        self._vocab_size = vocab_size
        self._eos = eos_token_id
        self._words = np.zeros((vocab_size + 31) // 32, dtype=np.int32)

    def allowed(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Which token ids may come next (length `vocab_size`; EOS only when complete).

        Raises:
            RuntimeError: the grammar hit an llguidance resource limit; fail the sequence.
        """
        return ~self._banned()

    def mask(self, logits: torch.Tensor) -> None:
        """Set the logits of the tokens the grammar forbids next to -inf, in place.

        Raises:
            RuntimeError: the grammar hit an llguidance resource limit; fail the sequence.
        """
        import torch

        banned = self._banned()
        if (
            logits.device.type == "cpu"
            and logits.dtype in (torch.float32, torch.float16, torch.float64)
            and logits.is_contiguous()
            and not logits.requires_grad
        ):
            # numpy works on the tensor's own memory in one thread; torch splits a fill this
            # size over its intra-op pool, which stalls for milliseconds when the cores are busy.
            np.putmask(logits.numpy(), banned, -np.inf)
        else:
            logits.masked_fill_(torch.from_numpy(banned).to(logits.device), float("-inf"))

    def _banned(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        self._inner.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
        if self._inner.is_error():
            reason = self._inner.get_error().strip().split("\n", 1)[0][:300]
            raise RuntimeError(f"constrained decoding failed ({reason}); end this sequence")
        # Bit j of word i is token 32*i + j; on a little-endian host the bytes of the int32
        # words are already in token order, so a little-endian unpack needs no shuffling.
        # Ids past the vocabulary have no bit set there, so they stay banned.
        bits = np.unpackbits(
            np.invert(self._words).view(np.uint8), count=self._vocab_size, bitorder="little"
        )
        return bits.view(np.bool_)

    def accept(self, token_id: int) -> None:
        """Advance past a sampled token.

        Raises:
            ValueError: the token was not allowed here (it was sampled from unmasked logits).
        """
        if self.terminated and token_id == self._eos:
            return  # the engine may still feed the EOS it sampled after completion
        if not self._inner.consume_token(token_id):
            # llguidance appends its parser state and the whole grammar; the first line says it.
            reason = self._inner.get_error().strip().split("\n", 1)[0][:300]
            raise ValueError(
                f"token {token_id} is not allowed by the constraint here ({reason}); "
                "sample from logits after Matcher.mask"
            )

    @property
    def terminated(self) -> bool:
        """The output is complete: only EOS could follow, so the sequence can stop."""
        return self._inner.is_stopped() and not self._inner.is_error()


class GrammarCache:
    """Compiled grammars per constraint key, for one tokenizer (thread-safe, bounded LRU).

    `compile` may run on any thread (the backend's `check_constraint` calls it off the event
    loop); `matcher` is cheap (a copy of the compiled start state) and is what the decode
    thread calls per sequence.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, *, capacity: int = CACHE_SIZE) -> None:
        import llguidance.hf

        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id; constrained decoding needs one")
        self.vocab_size = vocab_size
        self.eos_token_id: int = tokenizer.eos_token_id
        # ~0.3 s for a 49k vocabulary, so once per tokenizer; ids past the tokenizer's own
        # vocabulary (padding rows of the embedding) are always masked out.
        self._tokenizer: LLTokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
        self._capacity = capacity
        self._compiled: OrderedDict[str, CompiledConstraint] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, constraint: Constraint) -> CompiledConstraint:
        """The compiled grammar of a constraint, from the cache when it was seen before.

        Raises:
            UnsupportedSchema: an invalid schema, or a feature the decoder cannot enforce.
        """
        key = constraint.key()
        with self._lock:
            hit = self._compiled.get(key)
            if hit is not None:
                self._compiled.move_to_end(key)
                return hit
        # Outside the lock: a large schema takes a while, and the decode thread must not wait
        # for it in `matcher`. Two threads compiling the same key at once just do it twice.
        compiled = self._build(key, constraint)
        with self._lock:
            self._compiled[key] = compiled
            self._compiled.move_to_end(key)
            while len(self._compiled) > self._capacity:
                self._compiled.popitem(last=False)
        return compiled

    def matcher(self, constraint: Constraint) -> Matcher:
        """A fresh matcher at the start of the constraint's grammar."""
        compiled = self.compile(constraint)
        with self._lock:  # llguidance objects are not meant to be used from two threads at once
            inner = compiled.initial.deep_copy()
        return Matcher(inner, vocab_size=self.vocab_size, eos_token_id=self.eos_token_id)

    def _build(self, key: str, constraint: Constraint) -> CompiledConstraint:
        grammar = grammar_for(constraint)
        initial = self._start(grammar)
        if initial.is_error():
            where, param = "response_format schema", "response_format"
            if constraint.kind == "tools":
                # The grammar holds every tool; name the one whose parameters failed.
                param = "tools"
                where = next(
                    (
                        f"tool {t.name!r} parameters"
                        for t in constraint.tools
                        if self._start(_json_grammar(t.parameters or NO_ARGUMENTS)).is_error()
                    ),
                    "the tools grammar",
                )
            raise UnsupportedSchema(_explain(initial.get_error(), where), param=param)
        return CompiledConstraint(key=key, grammar=grammar, initial=initial)

    def _start(self, grammar: str) -> LLMatcher:
        matcher = LLMatcher(self._tokenizer, grammar, log_level=0)
        if not matcher.is_error():
            # The lexer is built lazily on the first mask; do it here so its errors (and its
            # cost) land in compile, not in the first decode step.
            words = np.zeros((self.vocab_size + 31) // 32, dtype=np.int32)
            matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        return matcher


def _explain(error: str, where: str) -> str:
    found = _UNIMPLEMENTED.search(error)
    if found:
        keys = found.group(1).replace('"', "'")
        what = f"uses {keys}, which constrained decoding cannot enforce; remove or rewrite it"
    elif "oneOf" in error:
        what = "has oneOf branches that may overlap; use anyOf or make the branches disjoint"
    else:
        detail = " ".join(error.split())[:300]
        what = f"cannot be enforced by constrained decoding ({detail}); rewrite it"
    return f"{where} {what} (supported: {SUPPORTED})"


def grammar_for(constraint: Constraint) -> str:
    """The llguidance grammar of a constraint (checks the schemas first).

    Raises:
        UnsupportedSchema: an invalid schema, a remote `$ref`, or a tool choice without a tool.
    """
    if constraint.kind == "json":
        schema = constraint.schema if constraint.schema is not None else {"type": "object"}
        check_schema(schema, where="response_format schema", param="response_format")
        return _json_grammar(schema)
    return LLMatcher.grammar_from_lark(
        tools_lark(constraint.tools, constraint.tool_choice, parallel=constraint.parallel)
    )


def tools_lark(tools: Sequence[ToolSpec], tool_choice: str, *, parallel: bool = True) -> str:
    """A Lark grammar for Hermes tool calls, or (with "auto") free text not starting with `<`.

    Each function is its own alternative, `{"name": <fixed>, "arguments": <%json params>}`,
    so a `$ref` in the parameters resolves against the parameters themselves.

    Raises:
        UnsupportedSchema: no tools, an unknown forced function, or invalid parameters.
    """
    if not tools:
        raise UnsupportedSchema("a tools constraint needs at least one tool", param="tools")
    chosen = list(tools)
    if tool_choice not in ("auto", "required"):
        chosen = [t for t in tools if t.name == tool_choice]
        if not chosen:
            names = ", ".join(repr(t.name) for t in tools)
            raise UnsupportedSchema(
                f"tool_choice names function {tool_choice!r}, which is not among the tools "
                f"({names}); name one of them or use 'auto' or 'required'",
                param="tool_choice",
            )
    rules = []
    for i, tool in enumerate(chosen):
        params = tool.parameters or NO_ARGUMENTS
        check_schema(params, where=f"tool {tool.name!r} parameters", param="tools")
        if "type" not in params:
            params = {**params, "type": "object"}  # arguments are always a JSON object
        # The name as the model would write it (raw UTF-8, not \u escapes).
        head = '{"name": ' + json.dumps(tool.name, ensure_ascii=False) + ', "arguments": '
        rules.append(f"fn_{i}: {json.dumps(head, ensure_ascii=False)} args_{i} " + '"}"')
        rules.append(f"args_{i}: %json " + json.dumps({**_strip_options(params), **_X_GUIDANCE}))
    functions = " | ".join(f"fn_{i}" for i in range(len(chosen)))
    start = "calls | text" if tool_choice == "auto" else "calls"
    return "\n".join(
        [
            f"start: {start}",
            'calls: call ("\\n" call)*' if parallel else "calls: call",
            f"call: {json.dumps(TOOL_CALL_OPEN)} ({functions}) {json.dumps(TOOL_CALL_CLOSE)}",
            *rules,
            # Free text: anything up to EOS, as long as it cannot be mistaken for a call.
            "text: /[^<](?s:.)*/",
        ]
    )


def _json_grammar(schema: Mapping[str, object]) -> str:
    return LLMatcher.grammar_from_json_schema(_strip_options(schema), overrides=JSON_OPTIONS)


def _strip_options(schema: Mapping[str, object]) -> dict[str, object]:
    # A client's own "x-guidance" could switch on flexible whitespace or lenient mode.
    return {k: v for k, v in schema.items() if k != "x-guidance"}


def check_schema(schema: Mapping[str, object], *, where: str, param: str) -> None:
    """Reject an invalid schema (meta-schema check) or one that refers outside itself.

    Raises:
        UnsupportedSchema: with what is wrong and where.
    """
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise UnsupportedSchema(
            f"{where} is not a valid JSON schema: {exc.message} (at {exc.json_path}); fix it "
            f"to follow JSON Schema draft 2020-12",
            param=param,
        ) from None
    for ref in _refs(schema):
        if not ref.startswith("#"):
            raise UnsupportedSchema(
                f"{where} uses '$ref' to {ref!r}, which constrained decoding cannot fetch; "
                f"only local references ('#/$defs/...') are supported, so inline that schema",
                param=param,
            )


def _refs(node: object) -> list[str]:
    if isinstance(node, Mapping):
        own = [v for k, v in node.items() if k in ("$ref", "$dynamicRef") and isinstance(v, str)]
        return own + [ref for v in node.values() for ref in _refs(v)]
    if isinstance(node, list):
        return [ref for v in node for ref in _refs(v)]
    return []
