"""Run one service as `raftloop up` does: uvicorn, except that SIGTERM also ends a start.

`python -m raftloop_cli.serve raftloop_ingest.main:build --port 8002` is
`uvicorn --factory raftloop_ingest.main:build --port 8002 --no-access-log` with one change:
uvicorn finishes the app's startup before it looks at a SIGTERM, and a service's startup joins
its consumer groups, which takes seconds per group on the embedded broker (half the session
timeout each). A stop during start would wait for all of it, then be killed (#18). Here a
SIGTERM before the app has started cancels the start and exits 0 at once; after it, uvicorn's own
shutdown runs (open requests get `--timeout-graceful-shutdown`, then the lifespan closes the
broker clients).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
from types import FrameType

import uvicorn
from typing_extensions import override

log = logging.getLogger("raftloop.serve")


class StoppableServer(uvicorn.Server):
    """A uvicorn server whose start a SIGTERM (or SIGINT) cancels."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._serving: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @override
    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._serving = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @override
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if not self.started and self._serving is not None and self._loop is not None:
            # Thread-safe scheduling also wakes the loop if it sleeps in select().
            self._loop.call_soon_threadsafe(self._serving.cancel)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until stopped."""
    parser = argparse.ArgumentParser(prog="python -m raftloop_cli.serve", description=__doc__)
    parser.add_argument("factory", help="module:function that builds the ASGI app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout-graceful-shutdown", type=int, default=3)
    args = parser.parse_args(argv)
    config = uvicorn.Config(
        args.factory,
        factory=True,
        host=args.host,
        port=args.port,
        access_log=False,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
    )
    try:
        StoppableServer(config).run()
    except asyncio.CancelledError:
        log.info("stopped while starting")
        logging.shutdown()
        # Nothing was started that needs closing (the loop and its tasks are closed already);
        # the interpreter's own teardown of a half-built app (spaCy, torch) took seconds.
        os._exit(0)


if __name__ == "__main__":
    main()
