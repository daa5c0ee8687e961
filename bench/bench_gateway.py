"""Gateway overhead: a fixed-latency OpenAI-compatible stub called directly vs through the gateway.

The gateway runs as its own process (uvicorn, one worker, upstream backend) in front of the stub;
capture on (events to a real embedded broker) and capture off are measured in the same run.
Added latency compares quantiles at a fixed 200 requests/s; throughput is measured closed-loop
and divided by the CPU seconds the gateway process used (requests/s per core).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.raw_http import Client

TITLE = "Gateway: added latency and throughput over an upstream stub, capture on vs off"
STUB_LATENCY_S = 0.010
RATE = 200
LOW_RATE = 50
LATENCY_SECONDS = 5
ROUNDS = 3
ROUND_SECONDS = 4
CONCURRENCY = 16
KEY = "bench-key-0123456789abcdef"
BODY = {
    "model": "raftloop",
    "messages": [{"role": "user", "content": "How long do refunds take?"}],
    "max_tokens": 16,
}
REQUEST_BODY = json.dumps(BODY).encode()
ANSWER = {
    "id": "stub",
    "object": "chat.completion",
    "created": 0,
    "model": "stub",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Refunds take five business days."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
}


# ---------------------------------------------------------------- the stub upstream


def _stub_main(port: int, latency_s: float) -> None:
    import uvicorn

    payload = json.dumps(ANSWER).encode()

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await asyncio.sleep(latency_s)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---------------------------------------------------------------- processes


def _wait_http(url: str, timeout_s: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout_s}s")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# A started gateway: its process and its base URL.
_Gateway = tuple[subprocess.Popen[bytes], str]


def _start_gateway(folder: Path, stub_port: int, broker: str, capture: bool) -> _Gateway:
    from raftloop_core.credentials import hash_key
    from raftloop_core.embedded import free_port

    keys = folder / "keys.json"
    row: dict[str, str | int] = {"key_id": "bench", "key_sha256": hash_key(KEY), "role": "client"}
    row |= {"requests_per_minute": 10**7, "tokens_per_minute": 10**9}
    keys.write_text(json.dumps([row]))
    port = free_port()
    env = os.environ | {
        "RAFTLOOP_DATA_DIR": str(folder / f"var-{capture}"),
        "RAFTLOOP_API_KEYS_FILE": str(keys),
        "RAFTLOOP_LOG_LEVEL": "WARNING",
        "KAFKA_BOOTSTRAP_SERVERS": broker,
        "GATEWAY_BACKEND": "upstream",
        "GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{stub_port}/v1",
        "GATEWAY_CAPTURE": str(capture).lower(),
        "GATEWAY_MAX_CONCURRENCY": "256",
        "GATEWAY_MAX_QUEUE": "1024",
    }
    log = open(folder / f"gateway-{capture}.log", "wb")  # noqa: SIM115 (lives as long as the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "raftloop_gateway.main:build",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    _wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc, f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- load


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _open_loop(url: str, headers: dict[str, str], rate: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    client = Client(url, headers)

    async def one() -> None:
        nonlocal errors
        start = time.perf_counter()
        try:
            errors += await client.post(REQUEST_BODY) != 200
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            errors += 1
        latencies.append((time.perf_counter() - start) * 1000)

    for _ in range(50):  # warm connections and code paths
        await one()
    latencies.clear()
    tasks = []
    begin = time.perf_counter()
    for i in range(rate * LATENCY_SECONDS):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    client.close()
    return latencies, errors


async def _closed_loop(url: str, headers: dict[str, str], seconds: int) -> tuple[int, float, int]:
    done = errors = 0
    client = Client(url, headers)
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < stop:
            try:
                status = await client.post(REQUEST_BODY)
                done += status == 200
                errors += status != 200
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                errors += 1

    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    client.close()
    return done, time.perf_counter() - begin, errors


def _gateway_figures(base: str, rate: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {KEY}"}
    latencies, errors = asyncio.run(_open_loop(f"{base}/v1/chat/completions", headers, rate))
    return {"p50": _quantile(latencies, 0.5), "p99": _quantile(latencies, 0.99), "errors": errors}


def _throughput(gateways: dict[bool, _Gateway]) -> dict[bool, dict[str, float]]:
    """Closed loop, alternating capture off/on in short rounds so background load hits both."""
    headers = {"Authorization": f"Bearer {KEY}"}
    totals = {mode: {"done": 0.0, "wall": 0.0, "cpu": 0.0, "errors": 0.0} for mode in gateways}
    for _ in range(ROUNDS):
        for mode, (proc, base) in gateways.items():
            cpu0 = _cpu_seconds(proc.pid)
            done, wall, errors = asyncio.run(
                _closed_loop(f"{base}/v1/chat/completions", headers, ROUND_SECONDS)
            )
            totals[mode]["cpu"] += _cpu_seconds(proc.pid) - cpu0
            totals[mode]["done"] += done
            totals[mode]["wall"] += wall
            totals[mode]["errors"] += errors
    return {
        mode: {
            "rps": t["done"] / t["wall"],
            "rps_per_core": t["done"] / max(t["cpu"], 1e-9),
            "errors": t["errors"],
        }
        for mode, t in totals.items()
    }


def run() -> dict[str, float | int | str]:
    """Direct vs through the gateway, capture off and on."""
    from raftloop_core.embedded import EmbeddedBroker, free_port
    from raftloop_core.messaging import ensure_topics
    from raftloop_core.settings import KafkaSettings

    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    stub_port = free_port()
    stub = subprocess.Popen(
        [sys.executable, __file__, "--stub", str(stub_port), str(STUB_LATENCY_S)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    broker = EmbeddedBroker(port=free_port()).start()
    gateways: dict[bool, _Gateway] = {}
    try:
        _wait_http(f"http://127.0.0.1:{stub_port}/")
        ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap_servers))
        for capture in (False, True):
            gateways[capture] = _start_gateway(tmp, stub_port, broker.bootstrap_servers, capture)
        direct_url = f"http://127.0.0.1:{stub_port}"
        figures = {}
        for rate in (LOW_RATE, RATE):
            direct, direct_errors = asyncio.run(
                _open_loop(f"{direct_url}/v1/chat/completions", {}, rate)
            )
            d50, d99 = _quantile(direct, 0.5), _quantile(direct, 0.99)
            on = _gateway_figures(gateways[True][1], rate)
            off = _gateway_figures(gateways[False][1], rate)
            figures[rate] = (d50, d99, on, off, direct_errors)
        throughput = _throughput(gateways)
    finally:
        for proc, _ in gateways.values():
            proc.terminate()
            proc.wait(15)
        broker.stop()
        stub.terminate()
        stub.wait(10)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
    out: dict[str, float | int | str] = {
        "stub_latency_ms": STUB_LATENCY_S * 1000,
        "cpu_cores_on_machine": os.cpu_count() or 0,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    errors = 0.0
    for rate, (d50, d99, on, off, direct_errors) in figures.items():
        out[f"direct_p50_ms_at_{rate}rps"] = round(d50, 2)
        out[f"direct_p99_ms_at_{rate}rps"] = round(d99, 2)
        out[f"added_p50_ms_at_{rate}rps"] = round(on["p50"] - d50, 2)
        out[f"added_p99_ms_at_{rate}rps"] = round(on["p99"] - d99, 2)
        out[f"added_p99_ms_at_{rate}rps_capture_off"] = round(off["p99"] - d99, 2)
        errors += direct_errors + on["errors"] + off["errors"]
    off_t, on_t = throughput[False], throughput[True]
    out |= {
        "rps_capture_off": round(off_t["rps"], 1),
        "rps_capture_on": round(on_t["rps"], 1),
        "rps_per_core_capture_off": round(off_t["rps_per_core"], 1),
        "rps_per_core_capture_on": round(on_t["rps_per_core"], 1),
        "capture_cost_pct": round(100 * (1 - on_t["rps_per_core"] / off_t["rps_per_core"]), 1),
        "errors": int(errors + off_t["errors"] + on_t["errors"]),
        "target": "added p99 < 5 ms at 200 rps on one worker; capture costs < 10% throughput",
    }
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--stub":
        _stub_main(int(sys.argv[2]), float(sys.argv[3]))
    else:
        print(json.dumps(run(), indent=2))
