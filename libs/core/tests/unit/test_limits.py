"""The request guards on a small app: body and header limits, unencodable text."""

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, File, UploadFile
from pydantic import BaseModel
from pydantic_settings import SettingsConfigDict

from raftloop_core.api import install_error_handlers
from raftloop_core.limits import BodyLimit, HttpLimits, RequestLimits, install_request_guards

LIMITS = RequestLimits(
    body=BodyLimit(4096, "T_MAX_REQUEST_BYTES"),
    max_header_bytes=2048,
    header_setting="T_MAX_HEADER_BYTES",
    routes={"/upload": BodyLimit(64 * 1024, "T_MAX_UPLOAD_BYTES")},
)


class Echo(BaseModel):
    text: str
    extra: dict[str, Any] = {}


def make_app(calls: list[str]) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install_request_guards(app, LIMITS)

    @app.post("/echo")
    async def echo(body: Echo) -> dict[str, str]:
        calls.append("echo")
        body.text.encode()  # what a tokenizer, Kafka or a database does with it
        return {"text": body.text}

    @app.post("/upload")
    async def upload(files: Annotated[list[UploadFile], File()]) -> dict[str, int]:
        calls.append("upload")
        return {"bytes": sum([len(await f.read()) for f in files])}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
async def http(calls: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(make_app(calls), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


async def chunks(total: int, size: int = 1000) -> AsyncIterator[bytes]:
    sent = 0
    yield b'{"text": "'
    while sent < total:
        yield b"a" * size
        sent += size
    yield b'"}'


def assert_envelope(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return str(error["message"])


async def test_a_declared_length_over_the_limit_is_refused_unread(
    http: httpx.AsyncClient, calls: list[str]
) -> None:
    response = await http.post("/echo", json={"text": "a" * 5000})
    message = assert_envelope(response, 413, "request_too_large")
    assert "4096 bytes" in message
    assert "T_MAX_REQUEST_BYTES" in message
    assert calls == []
    assert (await http.get("/healthz")).status_code == 200


async def test_a_chunked_body_is_counted_as_it_is_read(
    http: httpx.AsyncClient, calls: list[str]
) -> None:
    response = await http.post(
        "/echo", content=chunks(10_000), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    message = assert_envelope(response, 413, "request_too_large")
    assert "4096 bytes" in message
    assert calls == []
    small = await http.post(
        "/echo", content=chunks(2000), headers={"content-type": "application/json"}
    )
    assert small.status_code == 200
    assert calls == ["echo"]


async def test_a_route_with_its_own_limit_takes_more(
    http: httpx.AsyncClient, calls: list[str]
) -> None:
    ok = await http.post("/upload", files={"files": ("a.txt", b"x" * 20_000)})
    assert ok.json() == {"bytes": 20_000}
    too_big = await http.post("/upload", files={"files": ("a.txt", b"x" * 70_000)})
    assert "T_MAX_UPLOAD_BYTES" in assert_envelope(too_big, 413, "request_too_large")

    async def parts() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\n'
        for _ in range(100):
            yield b"x" * 1000
        yield b"\r\n--b--\r\n"

    chunked = await http.post(
        "/upload", content=parts(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert_envelope(chunked, 413, "request_too_large")
    assert calls == ["upload"]


async def test_headers_over_the_limit_get_431(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz", headers={"x-big": "a" * 3000})
    message = assert_envelope(response, 431, "headers_too_large")
    assert "2048" in message
    assert "T_MAX_HEADER_BYTES" in message
    assert (await http.get("/healthz", headers={"x-small": "a" * 1000})).status_code == 200


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"text": "a\\ud800b"}', "text"),
        (b'{"text": "\\udfff"}', "text"),
        (b'{"text": "x", "extra": {"list": [1, "ok", "\\ud83d"]}}', "extra.list.2"),
        (b'{"text": "x", "extra": {"\\ud800": 1}}', "extra.\\ud800"),
        (b'{"text": "\xed\xa0\x80"}', "text"),  # a surrogate's CESU-8 bytes
    ],
)
async def test_a_lone_surrogate_is_a_400_naming_where(
    http: httpx.AsyncClient, calls: list[str], raw: bytes, param: str
) -> None:
    response = await http.post("/echo", content=raw, headers={"content-type": "application/json"})
    message = assert_envelope(response, 400, "invalid_text")
    assert response.json()["error"]["param"] == param
    assert "surrogate" in message
    assert calls == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"text": "\\ud83d\\ude00"}',  # a full pair: one character
        b'{"text": "\\\\ud800"}',  # an escaped backslash, then letters
        '{"text": "\ud7ff\u00e9"}'.encode(),  # the last code point before the surrogates
    ],
)
async def test_valid_text_passes(http: httpx.AsyncClient, raw: bytes) -> None:
    response = await http.post("/echo", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


async def test_deeply_nested_json_is_checked_without_recursion(http: httpx.AsyncClient) -> None:
    depth = 900
    raw = b'{"text": "x", "extra": {"a": ' + b"[" * depth + b'"\\ud800"' + b"]" * depth + b"}}"
    response = await http.post("/echo", content=raw, headers={"content-type": "application/json"})
    assert response.status_code in (400, 413), response.text  # never a 500


def test_the_guards_must_come_before_the_routes() -> None:
    app = FastAPI()

    @app.get("/x")
    async def x() -> None: ...

    with pytest.raises(RuntimeError, match="before"):
        install_request_guards(app, LIMITS)


def test_limits_are_read_under_the_services_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    class SvcSettings(HttpLimits):
        model_config = SettingsConfigDict(env_prefix="SVC_", extra="ignore")

    monkeypatch.setenv("SVC_MAX_REQUEST_BYTES", "2048")
    limits = SvcSettings().request_limits({"/up": BodyLimit(10, "SVC_MAX_UPLOAD_BYTES")})
    assert limits.body == BodyLimit(2048, "SVC_MAX_REQUEST_BYTES")
    assert limits.header_setting == "SVC_MAX_HEADER_BYTES"
    assert limits.max_header_bytes == 16 * 1024
    assert limits.body_for("/up").max_bytes == 10
    assert limits.body_for("/other").max_bytes == 2048
