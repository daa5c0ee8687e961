"""The request guards behind a real uvicorn, with each of its HTTP parsers.

What uvicorn does by itself (checked here, so an upgrade that changes it shows up): httptools
passes a request head of any size to the app, h11 answers a bare 400 to one over 16 KiB that it
reads in pieces. The guards' 431 is then the only bound with httptools, uvicorn's default where
it is installed. Bodies over the limit get the 413 envelope, declared or chunked, and the
server stays up.
"""

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from raftloop_core.api import install_error_handlers
from raftloop_core.embedded import free_port
from raftloop_core.limits import BodyLimit, RequestLimits, install_request_guards

pytestmark = pytest.mark.integration

LIMITS = RequestLimits(
    body=BodyLimit(4096, "T_MAX_REQUEST_BYTES"),
    max_header_bytes=2048,
    header_setting="T_MAX_HEADER_BYTES",
)


class Echo(BaseModel):
    text: str


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install_request_guards(app, LIMITS)

    @app.post("/echo")
    async def echo(body: Echo) -> dict[str, str]:
        body.text.encode()
        return {"text": body.text}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


@pytest.fixture(scope="module", params=["httptools", "h11"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    port = free_port()
    config = uvicorn.Config(
        make_app(),
        host="127.0.0.1",
        port=port,
        http=request.param,
        log_level="warning",
        lifespan="off",
    )
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not runner.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield request.param, f"http://127.0.0.1:{port}"
    runner.should_exit = True
    thread.join(timeout=5)


def healthy(url: str) -> bool:
    return httpx.get(f"{url}/healthz", timeout=10).status_code == 200


def test_headers_over_the_limit_get_431_from_either_parser(server: tuple[str, str]) -> None:
    _, url = server
    response = httpx.get(f"{url}/healthz", headers={"x-big": "a" * 4000}, timeout=10)
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "headers_too_large"
    assert LIMITS.header_setting in response.json()["error"]["message"]
    assert healthy(url)


def test_what_uvicorn_does_with_a_huge_head(server: tuple[str, str]) -> None:
    parser, url = server
    try:
        status = httpx.get(f"{url}/healthz", headers={"x-big": "a" * 1_000_000}, timeout=10)
    except httpx.TransportError:  # h11 may close before the client has sent it all
        assert parser == "h11"
    else:
        # httptools hands the whole head to the app: only the guard refuses it.
        assert status.status_code == (431 if parser == "httptools" else 400), status.text
    assert healthy(url)


def test_bodies_over_the_limit_get_413_and_the_server_stays_up(server: tuple[str, str]) -> None:
    _, url = server
    declared = httpx.post(f"{url}/echo", json={"text": "a" * 4_000_000}, timeout=30)
    assert declared.status_code == 413, declared.text
    assert declared.json()["error"]["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(1000):
            yield b"a" * 1000
        yield b'"}'

    streamed = httpx.post(
        f"{url}/echo",
        content=chunked(),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert streamed.status_code == 413, streamed.text
    assert "4096 bytes" in streamed.json()["error"]["message"]
    lone = httpx.post(
        f"{url}/echo",
        content=b'{"text": "\\ud800"}',
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert lone.status_code == 400
    assert healthy(url)
