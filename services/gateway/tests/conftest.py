"""Gateway test helpers live beside this file (`gateway_support`)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from gateway_support import EventLog, Gateway, start_gateway

from raftloop_core.settings import KafkaSettings
from raftloop_core.topics import Topic


@pytest.fixture(scope="session")
def gateway(
    tiny_model_dir: Path, kafka_settings: KafkaSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """One gateway process on the tiny model and the session broker."""
    gw = start_gateway(
        tmp_path_factory.mktemp("gateway"),
        model_dir=tiny_model_dir,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        env={"GATEWAY_BASE_MODEL_NAME": "tiny-llama"},
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
async def gateway_events(
    kafka_settings: KafkaSettings,
    gateway: Gateway,  # noqa: ARG001  # the gateway (and so its topics) must be up first
) -> AsyncIterator[EventLog]:
    """Everything published on the gateway's topics during the session."""
    topics = [Topic.CHAT_COMPLETED, Topic.CHAT_FEEDBACK, Topic.ADAPTER_PROMOTED]
    group = f"gw-test-log-{uuid.uuid4().hex[:8]}"
    async with EventLog(kafka_settings, [str(t) for t in topics], group) as log:
        yield log


@pytest.fixture
def new_conversation(unique: Callable[[str], str]) -> Callable[[], dict[str, str]]:
    """Metadata naming a fresh conversation."""
    return lambda: {"conversation_id": unique("conv")}
