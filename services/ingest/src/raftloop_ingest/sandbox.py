"""Document parsing in a child process, with a wall-clock and a memory limit.

Parsing is CPU-bound pure Python (pypdf, BeautifulSoup): on the event loop one hostile PDF
stalled every request of the service, `/healthz` included, for 40 s. In a thread it would
still hold the GIL and could not be stopped. A child process can be killed at the deadline
and given its own memory limit, so a decompression bomb costs one process and never the
service.

Children come from a forkserver that has imported the parsers once, so starting one costs
tens of milliseconds rather than a fresh interpreter's import time; the forkserver itself is
a fresh interpreter, so children never inherit the service's threads, sockets or models.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
from dataclasses import dataclass
from multiprocessing.connection import Connection

from raftloop_ingest.documents import (
    DocumentError,
    DocumentTooLarge,
    ParsedDocument,
    ParseLimits,
    parse,
)

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["__main__", "raftloop_ingest.documents"])


class ParseTimeout(DocumentError):
    """Parsing a document took longer than the wall-clock limit."""


@dataclass(frozen=True)
class SandboxLimits:
    """What one parse may cost: the parser's own limits, plus time and memory."""

    parse: ParseLimits
    timeout_s: float = 60.0
    max_memory_bytes: int = 2_000_000_000


class SandboxedParser:
    """Parses documents in child processes, at most `concurrency` at a time."""

    def __init__(self, limits: SandboxLimits, *, concurrency: int = 2) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(concurrency)

    async def parse(self, name: str, data: bytes) -> ParsedDocument:
        """Clean text and metadata of one document, parsed off the event loop.

        Raises:
            DocumentTooLarge: over a size, page, decompression or memory limit.
            ParseTimeout: parsing took longer than the limit.
            DocumentError: the document cannot be read.
        """
        async with self._slots:
            return await asyncio.to_thread(self.parse_blocking, name, data)

    def parse_blocking(self, name: str, data: bytes) -> ParsedDocument:
        """`parse` for callers that are not on an event loop (this thread waits)."""
        limits = self.limits
        receiver, sender = _CONTEXT.Pipe(duplex=False)
        child = _CONTEXT.Process(
            target=_parse_in_child, args=(sender, name, data, limits), daemon=True
        )
        child.start()
        sender.close()
        try:
            if not receiver.poll(limits.timeout_s):
                raise ParseTimeout(
                    f"{name}: parsing took longer than {limits.timeout_s:g} s "
                    "(INGEST_PARSE_TIMEOUT_S) and was stopped; if the document is genuine, "
                    "split it into smaller files or raise INGEST_PARSE_TIMEOUT_S"
                )
            try:
                reply: ParsedDocument | DocumentError = receiver.recv()
            except EOFError:  # the child died without a word: killed by a limit
                child.join(5)
                raise _crashed(name, child.exitcode, limits) from None
        finally:
            if child.is_alive():
                child.kill()
            child.join()
            receiver.close()
        if isinstance(reply, DocumentError):
            raise reply
        return reply


def _out_of_memory(name: str, limits: SandboxLimits) -> DocumentTooLarge:
    return DocumentTooLarge(
        f"{name}: parsing it needs more than the {limits.max_memory_bytes:,}-byte memory limit "
        "(INGEST_PARSE_MAX_MEMORY_BYTES); split the document into smaller files or raise "
        "INGEST_PARSE_MAX_MEMORY_BYTES"
    )


def _crashed(name: str, exitcode: int | None, limits: SandboxLimits) -> DocumentError:
    if exitcode is not None and exitcode < 0:  # a signal: the kernel's limits, or the OOM killer
        return _out_of_memory(name, limits)
    return DocumentError(f"{name}: the parser failed (exit code {exitcode}); is the file intact?")


def _parse_in_child(sender: Connection, name: str, data: bytes, limits: SandboxLimits) -> None:
    """The child's whole life: limit itself, parse, send the document or the error back."""
    memory = limits.max_memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    reply: ParsedDocument | DocumentError
    try:
        reply = parse(name, data, limits.parse)
    except DocumentError as exc:
        reply = exc
    except MemoryError:
        reply = _out_of_memory(name, limits)
    except Exception as exc:  # noqa: BLE001
        # Whatever a parser library throws on input it did not expect is an answer about
        # this document, not a failure of the service: say so, with the library's words.
        reply = DocumentError(f"{name}: cannot be parsed ({type(exc).__name__}: {exc})")
    sender.send(reply)
    sender.close()
