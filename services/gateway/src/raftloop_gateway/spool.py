"""A bounded, fsync'd, append-only disk spool of events the broker could not take yet.

Segments are JSON-lines files named by sequence number; draining reads the oldest first and
records how far it got, so a crash mid-drain redelivers a few events with their original
`event_id` (consumers dedupe on it) and loses none.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Record:
    """One event ready to publish: topic, Kafka key and JSON value."""

    topic: str
    key: bytes
    value: bytes

    def line(self) -> bytes:
        """The record as one spool line."""
        row = {"t": self.topic, "k": self.key.decode(), "v": self.value.decode()}
        return json.dumps(row, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> Record:
        """Read a spool line back."""
        row = json.loads(line)
        return cls(row["t"], row["k"].encode(), row["v"].encode())


class SpoolFull(RuntimeError):
    """The spool reached its size bound; the gateway stops answering until it drains."""


class Spool:
    """Disk FIFO of records, bounded by `max_bytes`."""

    def __init__(self, folder: Path, *, max_bytes: int, segment_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._sizes = {p: p.stat().st_size for p in self._segments()}

    def _segments(self) -> list[Path]:
        return sorted(self.folder.glob("*.jsonl"))

    @property
    def size(self) -> int:
        """Bytes on disk in unfinished segments."""
        return sum(self._sizes.values())

    @property
    def full(self) -> bool:
        """Whether nothing more may be written."""
        return self.size >= self.max_bytes

    @property
    def pending(self) -> bool:
        """Whether records wait to be drained."""
        return bool(self._sizes)

    def append(self, records: list[Record]) -> None:
        """Write records durably (fsync) at the end of the spool.

        Raises:
            SpoolFull: writing would pass the size bound.
        """
        if not records:
            return
        data = b"".join(r.line() for r in records)
        if self.size + len(data) > self.max_bytes:
            raise SpoolFull(
                f"the capture spool {self.folder} holds {self.size} bytes, its bound is "
                f"{self.max_bytes} (GATEWAY_SPOOL_MAX_BYTES); the broker must come back"
            )
        segments = self._segments()
        if not segments or self._sizes.get(segments[-1], 0) >= self.segment_bytes:
            number = int(segments[-1].stem) + 1 if segments else 1
            segments.append(self.folder / f"{number:012d}.jsonl")
        target = segments[-1]
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if target not in self._sizes:
            _fsync_dir(self.folder)
        self._sizes[target] = self._sizes.get(target, 0) + len(data)

    def _offset_path(self, segment: Path) -> Path:
        return segment.with_suffix(".offset")

    def peek(self, limit: int) -> tuple[Path, int, list[Record]] | None:
        """The next records to drain: (segment, lines already drained, records)."""
        segments = self._segments()
        if not segments:
            return None
        segment = segments[0]
        offset_file = self._offset_path(segment)
        done = int(offset_file.read_text() or 0) if offset_file.exists() else 0
        with open(segment, "rb") as fh:
            lines = fh.read().splitlines()
        if done >= len(lines) and len(segments) == 1:
            self.commit(segment, done, len(lines))
            return None
        return segment, done, [Record.parse(line) for line in lines[done : done + limit] if line]

    def commit(self, segment: Path, done: int, count: int) -> None:
        """Mark `count` more records of `segment` as published; drop finished segments."""
        total = done + count
        with open(segment, "rb") as fh:
            lines = fh.read().count(b"\n")
        if total >= lines:
            segment.unlink(missing_ok=True)
            self._offset_path(segment).unlink(missing_ok=True)
            self._sizes.pop(segment, None)
            return
        self._offset_path(segment).write_text(str(total))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
