"""Pure rules of the two-tenant object-access matrix (issue #17): no I/O here.

Every operation of a service's OpenAPI document becomes requests aimed at another tenant's
objects: each path id is the victim's object of that name, each body or query field that can
name something is filled from the victim's values (its tenant, interaction, adapter, lease
token) or the intruder's own text. A path parameter or a required field that no rule fills is
*unclassified*: the test fails and names it, so a new route is never skipped silently.

`leaks()` is the oracle: a response holds a leak when it contains one of the victim's secrets
(ids and content markers) that the request did not send itself (echoing an id back in a 404's
message is no leak).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")
# A path parameter names one of the victim's objects: these are the object kinds there are.
PATH_OBJECTS = frozenset({"item_id", "document_id", "adapter_id", "user_id"})
# Query and header parameters the rules fill or may leave out; any other required one is
# unclassified.
KNOWN_QUERY = frozenset({"tenant"})
OMIT = object()
"""A field value that leaves the field out of the request (the key's own tenant, say)."""


@dataclass(frozen=True)
class Operation:
    """One route of one service, as its OpenAPI document describes it."""

    service: str
    method: str
    path: str
    path_params: tuple[str, ...] = ()
    query_params: tuple[tuple[str, bool], ...] = ()
    body_kind: str | None = None  # "json", "form" or "multipart"
    body_fields: tuple[str, ...] = ()
    required_fields: tuple[str, ...] = ()
    path_types: tuple[str, ...] = ()  # the JSON type of each path parameter

    def placeholder_path(self, uuid: str) -> str:
        """The path with a placeholder for each id: `1` for integers, `uuid` for the rest."""
        path = self.path
        for name, kind in zip(self.path_params, self.path_types, strict=True):
            path = path.replace("{" + name + "}", "1" if kind == "integer" else uuid)
        return path


@dataclass(frozen=True)
class Attempt:
    """One request a caller sends at the victim's objects."""

    service: str
    method: str
    path: str  # the route's template, for the tables
    url: str  # the concrete path
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    form: dict[str, Any] | None = None
    multipart: bool = False
    names_object: bool = False  # a path id of the victim
    names_tenant: bool = False  # a `tenant` field or parameter naming the victim

    def sent(self) -> str:
        """Everything the request itself carries, for telling echoes from leaks."""
        return " ".join(
            [
                self.url,
                json.dumps(self.params, default=str),
                json.dumps(self.json, default=str),
                json.dumps(self.form, default=str),
            ]
        )


@dataclass(frozen=True)
class Unclassified:
    """A route the rules cannot aim at the victim; the message says what to add."""

    service: str
    method: str
    path: str
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.service} {self.method} {self.path}: {self.reason}; classify it in "
            "tests/reliability/tenancy_matrix.py (PATH_OBJECTS, KNOWN_QUERY) or give the field "
            "a value in tenancy_world.attack_values()"
        )


def _resolve(schema: Mapping[str, Any], spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow `$ref`, and take the object out of `anyOf: [object, null]` (an optional body)."""
    for _ in range(5):
        if "$ref" in schema:
            name = str(schema["$ref"]).rsplit("/", 1)[-1]
            schema = spec["components"]["schemas"][name]
        elif "anyOf" in schema:
            objects = [s for s in schema["anyOf"] if s.get("type") != "null"]
            if len(objects) != 1:
                return schema
            schema = objects[0]
        else:
            break
    return schema


def operations(service: str, spec: Mapping[str, Any]) -> list[Operation]:
    """Every operation of one OpenAPI document, sorted by path and method."""
    kinds = {
        "application/json": "json",
        "application/x-www-form-urlencoded": "form",
        "multipart/form-data": "multipart",
    }
    found = []
    for path, ops in sorted(spec["paths"].items()):
        for method, op in sorted(ops.items()):
            if method not in METHODS:
                continue
            params = op.get("parameters", [])
            in_path = [p for p in params if p.get("in") == "path"]
            content = op.get("requestBody", {}).get("content", {})
            body_kind, fields, required = None, (), ()
            for ctype, media in content.items():
                body_kind = kinds.get(ctype, ctype)
                schema = _resolve(media.get("schema", {}), spec)
                fields = tuple(schema.get("properties", {}))
                required = tuple(schema.get("required", ()))
            found.append(
                Operation(
                    service,
                    method.upper(),
                    path,
                    tuple(str(p["name"]) for p in in_path),
                    tuple(
                        (str(p["name"]), bool(p.get("required")))
                        for p in params
                        if p.get("in") == "query"
                    ),
                    body_kind,
                    fields,
                    required,
                    tuple(str((p.get("schema") or {}).get("type", "string")) for p in in_path),
                )
            )
    return found


class Alternatives(tuple[object, ...]):
    """Several values of one field: one attempt per value (the first field that has them)."""


def _choices(value: object) -> list[object]:
    return list(value) if isinstance(value, Alternatives) else [value]


def plan(
    op: Operation, values: Mapping[str, object], *, manual_forms: Mapping[str, Sequence[str]]
) -> list[Attempt] | Unclassified:
    """The attempts of one operation against the victim, or why it cannot be aimed.

    Args:
        op: the operation.
        values: field name -> value (or `Alternatives`, or `OMIT`) for path ids, query
            parameters and body fields, from the victim's objects and the intruder's text.
        manual_forms: route (`"<service> <METHOD> <path>"`) -> form fields that a route reads
            by hand, without a schema (the review UI's item review and routing pages).
    """

    def unclassified(reason: str) -> Unclassified:
        return Unclassified(op.service, op.method, op.path, reason)

    url = op.path
    for name in op.path_params:
        if name not in PATH_OBJECTS or name not in values:
            return unclassified(f"path parameter {name!r} names no known kind of object")
        url = url.replace("{" + name + "}", str(values[name]))
    fields: dict[str, object] = {}
    for name, required in op.query_params:
        if name in KNOWN_QUERY and name in values:
            fields[f"?{name}"] = values[name]
        elif required:
            return unclassified(f"required query parameter {name!r} has no rule")
    body_names = list(op.body_fields)
    body_names += manual_forms.get(f"{op.service} {op.method} {op.path}", ())
    for name in body_names:
        if name in values:
            fields[name] = values[name]
        elif name in op.required_fields:
            return unclassified(f"required body field {name!r} has no value")
    varied = next((k for k, v in fields.items() if isinstance(v, Alternatives)), None)
    attempts = []
    for choice in _choices(fields[varied]) if varied else [None]:
        chosen = {k: (choice if k == varied else v) for k, v in fields.items()}
        chosen = {k: (_choices(v)[0]) for k, v in chosen.items()}
        chosen = {k: v for k, v in chosen.items() if v is not OMIT}
        params = {k[1:]: v for k, v in chosen.items() if k.startswith("?")}
        body = {k: v for k, v in chosen.items() if not k.startswith("?")}
        victim = values.get("tenant")
        victim_tenant = _choices(victim)[0] if victim is not None else None
        attempts.append(
            Attempt(
                op.service,
                op.method,
                op.path,
                url,
                params=params,
                json=body if op.body_kind == "json" else None,
                form=body
                if op.body_kind in ("form", "multipart") or (body and not op.body_kind)
                else None,
                multipart=op.body_kind == "multipart",
                names_object=bool(op.path_params),
                names_tenant=victim_tenant is not None
                and victim_tenant in (params.get("tenant"), body.get("tenant")),
            )
        )
    return attempts


def leaks(secrets: Iterable[str], sent: str, answer: str) -> list[str]:
    """The victim's secrets in `answer` that the request (`sent`) did not carry itself."""
    return sorted(s for s in set(secrets) if s and s in answer and s not in sent)


def iter_unclassified(results: Iterable[list[Attempt] | Unclassified]) -> Iterator[str]:
    """The messages of the operations the rules could not aim."""
    for result in results:
        if isinstance(result, Unclassified):
            yield str(result)
