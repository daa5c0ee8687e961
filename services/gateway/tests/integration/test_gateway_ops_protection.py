"""With RAFTLOOP_PROTECT_OPS the gateway's /metrics and API docs need an operator's key."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from gateway_support import start_gateway

from raftloop_core.settings import KafkaSettings

pytestmark = pytest.mark.integration


def test_metrics_and_docs_need_an_operators_key_when_protected(
    tiny_model_dir: Path, kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    gateway = start_gateway(
        tmp_path,
        model_dir=tiny_model_dir,
        bootstrap_servers=kafka_settings.bootstrap_servers,
        env={"RAFTLOOP_PROTECT_OPS": "true"},
        ready_path="/healthz",
    )
    try:
        callers = {"none": {}, **{role: gateway.auth(role) for role in gateway.keys}}

        def statuses(path: str) -> dict[str, int]:
            return {
                who: httpx.get(f"{gateway.url}{path}", headers=headers, timeout=30).status_code
                for who, headers in callers.items()
            }

        # The dev internal key acts for every tenant (a platform key); a tenant's own admin
        # may read the API docs but not every tenant's figures.
        assert statuses("/metrics") == {"none": 401, "client": 403, "admin": 403, "internal": 200}
        assert statuses("/openapi.json") == {
            "none": 401,
            "client": 403,
            "admin": 200,
            "internal": 200,
        }
        assert set(statuses("/healthz").values()) == {200}
    finally:
        gateway.stop()
