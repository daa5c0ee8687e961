"""A real consumer process for the kill -9 test: appends each processed event id to a file."""

import asyncio
import os
import sys
from pathlib import Path

from raftloop_core.events import FeedbackReceived
from raftloop_core.messaging import consumer_options, make_broker
from raftloop_core.testing import test_kafka_settings


async def main(bootstrap: str, topic: str, group: str, out: Path) -> None:
    settings = test_kafka_settings(bootstrap)
    broker = make_broker(settings)

    @broker.subscriber(topic, **consumer_options(settings, group_id=group))  # type: ignore[untyped-decorator]
    async def on_feedback(event: FeedbackReceived) -> None:
        with open(out, "a") as fh:
            fh.write(f"{event.event_id}\n")
            fh.flush()
            os.fsync(fh.fileno())
        await asyncio.sleep(0.02)

    async with broker:
        await broker.start()
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])))
