"""Traffic through the gateway and what every stage of the loop holds, for the fault tests."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from fleet import Fleet, decoded, group_lag, read_topic
from reliability_tools import Record, Stage

from raftloop_core.topics import Topic

INTERACTION_HEADER = "x-raftloop-interaction-id"


def ask(fleet: Fleet, question: str, *, key: str, stream: bool = False) -> httpx.Response:
    """One chat request through the gateway; a streamed body is read to its end."""
    body = {
        "model": "raftloop",
        "messages": [{"role": "user", "content": question}],
        "stream": stream,
        "max_tokens": 8,
    }
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{fleet.url('gateway')}/v1/chat/completions"
    if not stream:
        return httpx.post(url, json=body, headers=headers, timeout=60)
    with httpx.stream("POST", url, json=body, headers=headers, timeout=60) as response:
        response.read()
        return response


@dataclass
class Traffic:
    """A steady flow of chat requests on a thread; keeps the ids the gateway acknowledged."""

    fleet: Fleet
    marker: str
    pause_s: float = 0.2
    acked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sending."""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sending and wait for the last request."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)

    def _run(self) -> None:
        while not self._stop.is_set():
            question = f"{self.marker} question {self.sent}: how long do refunds take?"
            try:
                response = ask(
                    self.fleet, question, key=self.fleet.keys["client"], stream=self.sent % 2 == 1
                )
                if response.status_code == 200:
                    self.acked.append(response.headers[INTERACTION_HEADER])
                else:
                    self.errors.append(f"{response.status_code} {response.text[:200]}")
            except httpx.HTTPError as exc:
                self.errors.append(repr(exc))
            self.sent += 1
            self._stop.wait(self.pause_s)


def _question(payload: dict[str, object]) -> str:
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return ""
    return " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))


def topic_records(fleet: Fleet, topic: Topic, marker: str) -> list[Record]:
    """Records of this run (their question holds `marker`) on one topic of the loop."""
    out = []
    for obj in decoded(read_topic(fleet.kafka, topic)):
        inner = obj.get("interaction")
        payload = inner if isinstance(inner, dict) else obj
        if marker not in _question(payload):
            continue
        iid = str(payload.get("interaction_id"))
        if topic == Topic.INTERACTION_JUDGED:
            key = f"{iid}:{obj.get('revision')}"  # hitl's dedupe: event id, then revision
        else:
            key = str(obj.get("event_id"))
        out.append(Record(iid, key))
    return out


def hitl_db(fleet: Fleet) -> Path:
    """The review queue's SQLite file."""
    return fleet.folder / "var" / "hitl" / "hitl.sqlite3"


def hitl_records(fleet: Fleet, marker: str) -> list[Record]:
    """Review-queue items of this run, one record per row."""
    with sqlite3.connect(f"file:{hitl_db(fleet)}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute(
            "select id, interaction_id from items where question like ?", (f"%{marker}%",)
        ).fetchall()
    return [Record(str(iid), f"row{row_id}") for row_id, iid in rows]


def wait_until_queued(fleet: Fleet, marker: str, ids: set[str], timeout_s: float) -> float:
    """Wait until every id is in the review queue (or the time is up); the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if ids <= {r.interaction_id for r in hitl_records(fleet, marker)}:
            break
        time.sleep(2)
    return time.monotonic() - start


def stages(fleet: Fleet, marker: str) -> list[Stage]:
    """Capture, ingest, judge and hitl, with each consumer group's lag on its input."""
    kafka = fleet.kafka
    return [
        Stage("gateway -> chat.completed", topic_records(fleet, Topic.CHAT_COMPLETED, marker)),
        Stage(
            "ingest -> interaction.ingested",
            topic_records(fleet, Topic.INTERACTION_INGESTED, marker),
            group_lag(kafka, "ingest", Topic.CHAT_COMPLETED),
        ),
        Stage(
            "judge -> interaction.judged",
            topic_records(fleet, Topic.INTERACTION_JUDGED, marker),
            group_lag(kafka, "judge", Topic.INTERACTION_INGESTED),
        ),
        Stage(
            "hitl -> review queue (DB)",
            hitl_records(fleet, marker),
            group_lag(kafka, "hitl", Topic.INTERACTION_JUDGED),
        ),
    ]


@dataclass
class AfterWrite:
    """Waits until a service has just written something, so a kill lands before its commit.

    ingest and hitl log one line per applied message after their database transaction
    ("interaction ingested", "judged interaction routed"); the judge commits its offsets after
    each batch, so a new record on interaction.judged marks a written but uncommitted batch.
    """

    fleet: Fleet
    lines: dict[str, str] = field(
        default_factory=lambda: {
            "ingest": '"interaction ingested"',
            "hitl": '"judged interaction routed"',
        }
    )

    def wait(self, name: str, timeout_s: float = 30) -> bool:
        """Block until `name` writes again; False if it wrote nothing within `timeout_s`."""
        if name in self.lines:
            return self._wait_line(name, timeout_s)
        return self._wait_offsets(Topic.INTERACTION_JUDGED, timeout_s)

    def _wait_line(self, name: str, timeout_s: float) -> bool:
        log = self.fleet.services[name].log
        seen = log.stat().st_size
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with log.open("rb") as f:
                f.seek(seen)
                if self.lines[name].encode() in f.read():
                    return True
            time.sleep(0.02)
        return False

    def _wait_offsets(self, topic: Topic, timeout_s: float) -> bool:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.fleet.kafka.servers, group_id=None)
        try:
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            start = sum(consumer.end_offsets(tps).values())
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if sum(consumer.end_offsets(tps).values()) > start:
                    return True
                time.sleep(0.02)
            return False
        finally:
            consumer.close()
