"""Broker restart under a steady flow, with Tansu's s3:// storage on moto's S3 server.

The broker is killed with SIGKILL mid-flow and started again on the same storage: the gateway
answers throughout (spooling while the broker is gone), and every interaction it acknowledged,
before, during and after the outage, is on chat.completed.v1 exactly once after dedupe.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import SETTINGS, Fleet
from loop_support import Traffic, topic_records
from reliability_tools import Section, Stage, check_stages, record, totals

from raftloop_core.embedded import free_port, wait_for_port
from raftloop_core.topics import Topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BUCKET = "tansu"
COMMAND = "make reliability  # or: pytest tests/reliability/test_reliability_broker.py"


@pytest.fixture
def moto_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An S3 server (moto) with one bucket; the AWS_* settings Tansu's object store reads."""
    import boto3  # type: ignore[import-untyped]  # ships no type information

    port = free_port()
    with (tmp_path / "moto.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-p", str(port)], stdout=log, stderr=log
        )
    try:
        wait_for_port("127.0.0.1", port, timeout_s=60, proc=proc)
        endpoint = f"http://127.0.0.1:{port}"
        aws = {
            "AWS_ACCESS_KEY_ID": "reliability",
            "AWS_SECRET_ACCESS_KEY": "reliability",
            "AWS_DEFAULT_REGION": "eu-west-2",
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
        }
        for name, value in aws.items():
            monkeypatch.setenv(name, value)  # the broker child inherits them
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
            region_name=aws["AWS_DEFAULT_REGION"],
        ).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
        )
        yield f"s3://{BUCKET}/"
    finally:
        proc.kill()
        proc.wait(30)


def test_broker_restart_on_s3_keeps_every_acknowledged_interaction(
    tmp_path: Path, moto_s3: str
) -> None:
    from raftloop_models.tiny import build_tiny_llama

    model = build_tiny_llama(tmp_path / "tiny-llama")
    # A publish timeout shorter than the outage: the gateway gives up on the broker and spools.
    env = {
        **SETTINGS,
        "GATEWAY_BASE_MODEL_PATH": str(model),
        "GATEWAY_PUBLISH_TIMEOUT_MS": "2000",
    }
    fleet = Fleet.start(tmp_path / "fleet", ("gateway",), env, storage=moto_s3)
    marker = f"broker-{uuid.uuid4().hex[:8]}"
    try:
        traffic = Traffic(fleet, marker)
        traffic.start()
        try:
            time.sleep(8)
            before = len(traffic.acked)
            fleet.restart_broker(down_s=8)
            time.sleep(8)
        finally:
            traffic.stop()
        acked = set(traffic.acked)
        rows = check_stages(acked, [])
        deadline = time.monotonic() + 180  # the spool drains once the broker is back
        while time.monotonic() < deadline:
            records = topic_records(fleet, Topic.CHAT_COMPLETED, marker)
            rows = check_stages(acked, [Stage("gateway -> chat.completed", records)])
            if rows[0].lost == 0:
                break
            time.sleep(3)
    finally:
        fleet.stop()
    sums = totals(rows)
    log = fleet.logs()["gateway"]
    record(
        Section(
            "15-broker",
            "Broker kill -9 and restart on s3:// storage (moto) under a steady flow",
            COMMAND,
            {
                "storage": moto_s3,
                "requests sent": traffic.sent,
                "acknowledged": len(acked),
                "acknowledged before the kill": before,
                "gateway errors": len(traffic.errors),
                "lost": sums["lost"],
                "duplicated after dedupe": sums["duplicated"],
                "redelivered copies": rows[0].redelivered,
                "gateway spooled while the broker was down": "broker unreachable" in log,
                "spool drained afterwards": "capture spool drained" in log,
            },
            notes=[
                "The broker is down for 8 s (GATEWAY_PUBLISH_TIMEOUT_MS=2000); the gateway keeps "
                "answering, spools captured events to disk, then drains them. Dedupe key: the "
                "event id."
            ],
        )
    )
    assert acked
    assert traffic.errors == []
    assert sums == {"lost": 0, "stuck": 0, "duplicated": 0}, rows
