"""Traffic through the gateway and what every stage of the loop holds, for the fault tests."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
class Background:
    """A loop that runs `_run` on a daemon thread until `stop()`; `_run` checks `_stop`."""

    _stop: threading.Event = field(default_factory=threading.Event, kw_only=True)
    _thread: threading.Thread | None = field(default=None, kw_only=True)

    def start(self) -> None:
        """Start the loop."""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the step in hand and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)

    def _run(self) -> None:
        raise NotImplementedError


@dataclass
class Traffic(Background):
    """A steady flow of chat requests on a thread; keeps the ids the gateway acknowledged."""

    fleet: Fleet
    marker: str
    pause_s: float = 0.2
    acked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sent: int = 0

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
class Reviewer(Background):
    """A reviewer on a thread: claims queue items and approves those of this run.

    Items of other tests are skipped. `reviewed` keeps the interaction ids whose review the
    hitl API acknowledged (2xx); a review cut off by a kill of hitl is retried with a new claim.
    """

    fleet: Fleet
    marker: str
    reviewed: list[str] = field(default_factory=list)
    errors: int = 0

    def _run(self) -> None:
        headers = {
            "Authorization": f"Bearer {self.fleet.keys['internal']}",
            "X-Reviewer": "fault-suite",
        }
        while not self._stop.is_set():
            try:
                self._review_one(headers)
            except (httpx.HTTPError, KeyError, ValueError):
                self.errors += 1  # hitl is down or was killed mid-request: claim again
                self._stop.wait(0.5)

    def _review_one(self, headers: dict[str, str]) -> None:
        api = f"{self.fleet.url('hitl')}/api/v1"
        got = httpx.post(f"{api}/claims", headers=headers, timeout=30)
        if got.status_code == 204:
            self._stop.wait(0.5)
            return
        got.raise_for_status()
        claim = got.json()
        item = claim["item"]
        interaction = item["event"]["interaction"]
        ours = self.marker in _question(interaction)
        body = {
            "action": "approved" if ours else "skipped",
            "lease_token": claim["lease_token"],
            "answer": interaction["answer"] or "(empty)",
            "reason": "fault suite" if ours else "another test's item",
            "oracle_chunk_ids": [],
        }
        done = httpx.post(
            f"{api}/items/{item['id']}/reviews", json=body, headers=headers, timeout=30
        )
        if done.status_code < 300 and ours:
            self.reviewed.append(str(interaction["interaction_id"]))
        elif done.status_code >= 300:
            self.errors += 1


def trainer_records(fleet: Fleet, marker: str) -> list[Record]:
    """Examples of this run in the trainer's dataset, one record per row."""
    db = fleet.folder / "var" / "trainer" / "dataset.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute(
            "select example_id, interaction_id from trainer_examples where question like ?",
            (f"%{marker}%",),
        ).fetchall()
    return [Record(str(iid), str(example_id)) for example_id, iid in rows]


def _by_interaction(objs: list[dict[str, object]], ids: set[str]) -> list[Record]:
    return [
        Record(str(o.get("interaction_id")), str(o.get("event_id")))
        for o in objs
        if str(o.get("interaction_id")) in ids
    ]


def review_stages(fleet: Fleet, marker: str, reviewed: set[str]) -> list[Stage]:
    """What the reviews of this run became: review.completed, curated, the trainer's dataset.

    review.completed and curated are keyed by event id (hitl's outbox relays each once, with a
    fixed id); the trainer's rows by example id, so one interaction curated twice under two
    example ids shows as a duplicate.
    """
    kafka = fleet.kafka
    reviews = decoded(read_topic(kafka, Topic.REVIEW_COMPLETED))
    curated = decoded(read_topic(kafka, Topic.EXAMPLE_CURATED))
    return [
        Stage("hitl -> review.completed", _by_interaction(reviews, reviewed)),
        Stage("hitl -> dataset.example.curated", _by_interaction(curated, reviewed)),
        Stage(
            "trainer -> dataset (DB)",
            trainer_records(fleet, marker),
            group_lag(kafka, "trainer", Topic.EXAMPLE_CURATED),
        ),
    ]


def wait_until_curated(fleet: Fleet, marker: str, ids: set[str], timeout_s: float) -> float:
    """Wait until every reviewed id is in the trainer's dataset; the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if ids <= {r.interaction_id for r in trainer_records(fleet, marker)}:
            break
        time.sleep(2)
    return time.monotonic() - start


@contextmanager
def one_review_per_item(fleet: Fleet) -> Iterator[None]:
    """No second-reviewer overlap while the block runs, so each approval completes its item.

    hitl gives a share of items to two reviewers (agreement statistics); the fault test has one
    reviewer, and an item waiting for its second review is not curated yet.
    """
    url = f"{fleet.url('hitl')}/api/v1/routing"
    headers = {"Authorization": f"Bearer {fleet.keys['admin']}"}
    old = httpx.get(url, headers=headers, timeout=30).raise_for_status().json()
    httpx.put(url, json=old | {"overlap_rate": 0.0}, headers=headers, timeout=30).raise_for_status()
    try:
        yield
    finally:
        httpx.put(url, json=old, headers=headers, timeout=120).raise_for_status()
