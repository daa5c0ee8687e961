"""The one logging setup: JSON lines, FastStream through it, repeated dependency lines limited."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from raftloop_core.logs import FastStreamLog, JsonFormatter, RepeatLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, level: int = logging.ERROR, msg: str = "Unable connect") -> logging.LogRecord:
    return logging.makeLogRecord({"name": name, "levelno": level, "msg": msg})


def test_a_repeating_dependency_gets_one_line_per_doubling_window() -> None:
    clock = Clock()
    limiter = RepeatLimiter(first_s=1.0, max_s=8.0, clock=clock)
    passed: list[tuple[float, int]] = []
    for tick in range(200):  # 20 s of a line every 100 ms
        clock.now = tick / 10
        rec = record("aiokafka")
        if limiter.filter(rec):
            passed.append((clock.now, getattr(rec, "suppressed", 0)))

    assert [t for t, _ in passed] == [0.0, 1.0, 3.0, 7.0, 15.0]
    assert [n for _, n in passed] == [0, 9, 19, 39, 79]


def test_loggers_are_limited_separately_and_a_quiet_one_starts_again() -> None:
    clock = Clock()
    limiter = RepeatLimiter(first_s=1.0, clock=clock)
    assert limiter.filter(record("aiokafka"))
    assert limiter.filter(record("aiokafka.consumer.fetcher"))
    assert not limiter.filter(record("aiokafka"))
    clock.now = 30.0
    assert limiter.filter(again := record("aiokafka"))
    assert vars(again)["suppressed"] == 1  # an attribute the filter adds to the record
    clock.now = 40.0  # quiet for a whole window: no count, the window is 1 s again
    assert limiter.filter(fresh := record("aiokafka"))
    assert not hasattr(fresh, "suppressed")
    clock.now = 41.5
    assert limiter.filter(record("aiokafka"))


def test_our_lines_and_dependency_info_lines_are_never_limited() -> None:
    limiter = RepeatLimiter(clock=Clock())
    assert all(limiter.filter(record("raftloop_judge.consumer")) for _ in range(50))
    assert all(limiter.filter(record("faststream.kafka", logging.INFO)) for _ in range(50))
    assert all(limiter.filter(record("aiokafkaesque")) for _ in range(5))


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("judge"))
    logger = logging.getLogger("faststream.kafka")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_faststream_lines_are_json_with_their_context_as_fields(captured: io.StringIO) -> None:
    log = FastStreamLog()
    log.log(logging.INFO, "Consumer assigned", extra={"topic": "t", "group_id": "", "x": None})
    log.log(logging.DEBUG, "Received")  # per-message lines stay off at INFO

    [line] = captured.getvalue().splitlines()
    payload = json.loads(line)
    assert payload["logger"] == "faststream.kafka"
    assert payload["msg"] == "Consumer assigned"
    assert payload["topic"] == "t"
    assert "group_id" not in payload
    assert not hasattr(log, "setLevel")


def test_uvicorns_colour_copy_is_not_a_field() -> None:
    rec = logging.makeLogRecord({"name": "uvicorn.error", "msg": "Started", "color_message": "x"})
    assert "color_message" not in json.loads(JsonFormatter("judge").format(rec))
