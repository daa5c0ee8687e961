"""Structured logging: one JSON object per line, carrying ids such as `interaction_id`.

Ids reach a line in two ways: `extra={"interaction_id": ...}` on one call, or `bind(...)`
around a unit of work (a request, a handled event), which adds its fields to every line logged
inside it, in this task and the tasks it starts. `bound("interaction_id")` reads a bound id, so
a client can forward it (the gateway sends it to rag as `INTERACTION_ID_HEADER`).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_CONTEXT: ContextVar[Mapping[str, str]] = ContextVar(
    "raftloop_log_context", default=MappingProxyType({})
)

INTERACTION_ID_HEADER = "x-raftloop-interaction-id"
"""HTTP header that carries the interaction id from one service to another."""


@contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add `fields` (None values skipped) to every log line written inside the block."""
    merged = dict(_CONTEXT.get())
    merged.update({k: str(v) for k, v in fields.items() if v is not None})
    token = _CONTEXT.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bound(name: str) -> str | None:
    """The value `bind` gave `name` in the current context, if any."""
    return _CONTEXT.get().get(name)


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON; every `extra=` field becomes a key."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as one JSON line."""
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update(_CONTEXT.get())
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(service: str, *, level: str = "INFO", fmt: str = "json") -> None:
    """Route every logger (uvicorn and FastStream included) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "faststream", "aiokafka"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("kafka").setLevel(logging.WARNING)
