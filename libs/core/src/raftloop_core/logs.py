"""Structured logging: one JSON object per line, carrying ids such as `interaction_id`.

Ids reach a line in two ways: `extra={"interaction_id": ...}` on one call, or `bind(...)`
around a unit of work (a request, a handled event), which adds its fields to every line logged
inside it, in this task and the tasks it starts. `bound("interaction_id")` reads a bound id, so
a client can forward it (the gateway sends it to rag as `INTERACTION_ID_HEADER`).

Every line a service writes is one JSON object (issue #18): uvicorn's, FastStream's, aiokafka's
and Python's warnings go through the one handler that `configure_logging` installs, and a
dependency that repeats itself (aiokafka while the broker is gone logs hundreds of lines a
second) is limited to one line per logger per backoff step by `RepeatLimiter`, each carrying
`suppressed`, the number of lines left out since the previous one.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any

# `color_message`: uvicorn's copy of the message with terminal colour codes.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
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


DEPENDENCIES = ("aiokafka", "kafka", "faststream", "asyncio", "httpx", "httpcore")
"""Loggers of libraries whose repeated lines `RepeatLimiter` limits (ours are never limited)."""

FASTSTREAM_LOGGER = "faststream.kafka"
"""Where FastStream's broker logs (see `FastStreamLog`)."""


@dataclass
class _Window:
    until: float
    length: float
    suppressed: int = 0


class RepeatLimiter(logging.Filter):
    """At most one warning per dependency logger per backoff step while the logger repeats itself.

    Only warnings and errors are limited (what a dependency repeats while something is down);
    its informational lines and all of ours always pass. After a line passes, that logger's
    further lines are left out for `first_s`; if any were left out, the next line that passes
    says how many (`suppressed`) and the window doubles, up to `max_s`. A logger that was quiet
    for a whole window starts again at `first_s`.
    """

    def __init__(
        self,
        prefixes: tuple[str, ...] = DEPENDENCIES,
        *,
        first_s: float = 1.0,
        max_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.first_s = first_s
        self.max_s = max_s
        self.clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def _limited(self, name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in self.prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether `record` is written; a written one gets `suppressed` when lines were left out."""
        if record.levelno < logging.WARNING or not self._limited(record.name):
            return True
        now = self.clock()
        with self._lock:
            window = self._windows.get(record.name)
            if window is not None and now < window.until:
                window.suppressed += 1
                return False
            length = self.first_s
            if window is not None and window.suppressed:
                record.suppressed = window.suppressed
                length = min(self.max_s, window.length * 2)
            self._windows[record.name] = _Window(until=now + length, length=length)
            return True


class FastStreamLog:
    """FastStream's broker log (its `logger=`), written through ours instead of its own stdout.

    FastStream's default broker logger prints plain text to stdout with its own handler. This
    one hands each line to `FASTSTREAM_LOGGER`, so it is JSON like every other line, and it
    has no `setLevel`, so FastStream's `log_level` cannot turn on its per-message lines.
    """

    def __init__(self, name: str = FASTSTREAM_LOGGER) -> None:
        self.logger = logging.getLogger(name)

    def log(
        self,
        level: int,
        msg: Any,
        /,
        *,
        exc_info: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Log one FastStream line; its context (topic, group) becomes fields."""
        fields = {k: v for k, v in (extra or {}).items() if v not in ("", None)}
        self.logger.log(level, msg, exc_info=exc_info, extra=fields)


def configure_logging(service: str, *, level: str = "INFO", fmt: str = "json") -> None:
    """Route every logger (uvicorn, FastStream, aiokafka, warnings) to stderr in the chosen format.

    Repeated lines from dependencies are limited by `RepeatLimiter`; uncaught exceptions, in
    threads too, are logged rather than printed, so they are JSON lines as well.
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    handler.addFilter(RepeatLimiter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in (
        "uvicorn",
        "uvicorn.error",
        "uvicorn.access",
        "faststream",
        "faststream.access",
        "faststream.access.kafka",
        "aiokafka",
        "py.warnings",
    ):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("kafka").setLevel(logging.WARNING)
    # sentence-transformers draws a progress bar on stderr whenever its logger is at INFO.
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_exception


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    logging.getLogger("raftloop").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("raftloop").error(
        "uncaught exception in a thread",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
        extra={"thread_name": args.thread.name if args.thread else None},
    )
