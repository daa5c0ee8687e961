r"""Limits on every HTTP door (issue #18): request body and header sizes, unencodable text.

Every service calls `install_request_guards(app, settings.request_limits())` right after
`FastAPI(...)` and before it adds a route. That wires:

- `RequestLimitMiddleware`: request headers over `max_header_bytes` get 431; a body over its
  route's limit gets 413. A declared `Content-Length` over the limit is refused before a byte of
  the body is read; a chunked body is counted as the app reads it and the read that crosses the
  limit fails, so the app never holds more than the limit. Whatever the app then answered is
  replaced by the 413, in the OpenAI envelope, saying the limit and the setting that raises it.
- `reject_unencodable_text`: a dependency of every route that refuses (400) a JSON body with a
  lone UTF-16 surrogate (`"\ud800"`). Python's `json` decodes one into a `str` that no UTF-8
  encoder accepts, so it used to pass validation and fail later (tokenizer, Kafka, database) as
  a 500.

Why our own header check: uvicorn bounds no request head with httptools (its default parser
where httptools is installed, as in every service here), and with h11 only one that arrives in
pieces (`h11_max_incomplete_event_size`, 16 KiB, answered with a bare 400). Heads arrive whole
from the server, so this check bounds what the app works on, not what the server buffered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute
from pydantic import Field
from pydantic_settings import BaseSettings
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from raftloop_core.api import ApiError, error_response

log = logging.getLogger(__name__)

KIB = 1024
MIB = 1024 * KIB
DEFAULT_MAX_REQUEST_BYTES = MIB
"""A JSON API's body limit: far above any request a route takes, far below memory trouble."""
DEFAULT_MAX_HEADER_BYTES = 16 * KIB
"""As h11 and Node bound a request head; cookies of other local apps share 127.0.0.1."""


@dataclass(frozen=True)
class BodyLimit:
    """The most body bytes a route takes, and the setting that raises it."""

    max_bytes: int
    setting: str


@dataclass(frozen=True)
class RequestLimits:
    """A service's limits: one body limit for every route but those in `routes` (by path)."""

    body: BodyLimit
    max_header_bytes: int
    header_setting: str
    routes: Mapping[str, BodyLimit] = field(default_factory=dict)

    def body_for(self, path: str) -> BodyLimit:
        """The body limit of the route at `path`."""
        return self.routes.get(path, self.body)


class HttpLimits(BaseSettings):
    """Request size limits; a service's settings inherit them under its own prefix.

    So they read `<SVC>_MAX_REQUEST_BYTES` and `<SVC>_MAX_HEADER_BYTES`; a service may override
    a default (the gateway takes 256 KiB bodies).
    """

    max_request_bytes: int = Field(
        default=DEFAULT_MAX_REQUEST_BYTES,
        ge=KIB,
        description="Largest request body; larger get 413 (routes with their own limit aside).",
    )
    max_header_bytes: int = Field(
        default=DEFAULT_MAX_HEADER_BYTES,
        ge=KIB,
        description="Largest sum of request header names and values; larger ones get 431.",
    )

    def env_name(self, name: str) -> str:
        """The environment variable of the field `name` (`max_request_bytes` -> `RAG_MAX_...`)."""
        return f"{self.model_config.get('env_prefix', '')}{name}".upper()

    def request_limits(self, routes: Mapping[str, BodyLimit] | None = None) -> RequestLimits:
        """These limits, with `routes` (path -> limit) taking their own body limit."""
        return RequestLimits(
            body=BodyLimit(self.max_request_bytes, self.env_name("max_request_bytes")),
            max_header_bytes=self.max_header_bytes,
            header_setting=self.env_name("max_header_bytes"),
            routes=dict(routes or {}),
        )


def install_request_guards(app: FastAPI, limits: RequestLimits) -> None:
    """Wire the size limits and the text check into `app`; call it before adding routes.

    Raises:
        RuntimeError: `app` already has API routes, which would miss the text check.
    """
    if any(isinstance(route, APIRoute) for route in app.routes):
        raise RuntimeError("install_request_guards must run before the app's routes are added")
    app.add_middleware(RequestLimitMiddleware, limits=limits)
    app.router.dependencies.append(Depends(reject_unencodable_text))


class BodyTooLarge(Exception):
    """The request body went over its limit while the app read it."""


class RequestLimitMiddleware:
    """Pure ASGI: it must see the body before FastAPI reads it, and never buffer it."""

    def __init__(self, app: ASGIApp, *, limits: RequestLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the headers and the declared length, then count the body as it is read."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        head = sum(len(name) + len(value) for name, value in headers)
        if head > self.limits.max_header_bytes:
            await self._refuse(scope, receive, send, self._headers_too_large(head))
            return
        limit = self.limits.body_for(scope["path"])
        declared = _content_length(headers)
        if declared is not None and declared > limit.max_bytes:
            await self._refuse(scope, receive, send, _body_too_large(limit, declared))
            return
        body = _CountedBody(receive, send, limit.max_bytes)
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if not body.over or body.started:
                raise
            # The app failed on the read we cut off; the 413 below says why.
        if body.over and not body.started:
            await self._refuse(scope, receive, send, _body_too_large(limit, None))

    def _headers_too_large(self, size: int) -> ApiError:
        return ApiError(
            431,
            f"request headers are {size} bytes, over this service's limit of "
            f"{self.limits.max_header_bytes}; send fewer or shorter headers (cookies of other "
            f"sites on this host count too), or raise {self.limits.header_setting}",
            code="headers_too_large",
        )

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
        log.info(
            "request refused at the door",
            extra={"path": scope["path"], "status": error.status, "code": error.code},
        )
        await error_response(error)(scope, receive, send)


def _body_too_large(limit: BodyLimit, declared: int | None) -> ApiError:
    size = f" ({declared} declared)" if declared is not None else ""
    return ApiError(
        413,
        f"request body is over this route's limit of {limit.max_bytes} bytes{size}; send a "
        f"smaller body (split a batch into several requests), or raise {limit.setting}",
        code="request_too_large",
    )


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.strip().isdigit() else None
    return None


class _CountedBody:
    """One request's body as the app reads it: counted, cut off past `max_bytes`."""

    def __init__(self, receive: Receive, send: Send, max_bytes: int) -> None:
        self._receive = receive
        self._send = send
        self.max_bytes = max_bytes
        self.received = 0
        self.over = False
        self.started = False

    async def receive(self) -> Message:
        if self.over:
            raise BodyTooLarge
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.max_bytes:
                self.over = True
                raise BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        if self.over and not self.started:
            return  # the app's answer to the cut-off read; the middleware sends the 413
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


# A lone surrogate in JSON text: an escape \uD800-\uDFFF, or its CESU-8 bytes, which `json`
# decodes with "surrogatepass". Only a body that matches is walked (a valid pair matches too).
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SURROGATE = re.compile("[\ud800-\udfff]")


async def reject_unencodable_text(request: Request) -> None:
    """Refuse a JSON body whose text cannot be encoded as UTF-8 (a lone surrogate).

    Raises:
        ApiError: 400 naming where in the body the text is.
    """
    content_type = request.headers.get("content-type", "application/json").lower()
    if "json" not in content_type.split(";")[0]:
        return
    body = await request.body()
    if not _MAYBE_SURROGATE.search(body):
        return
    try:
        data = await request.json()
    except ValueError:
        return  # not JSON: the route's own parsing answers that
    where = _lone_surrogate_at(data)
    if where is None:
        return
    param = ".".join(where) or None
    raise ApiError(
        400,
        f"invalid request: {param + ': ' if param else ''}the text holds a lone UTF-16 "
        "surrogate (such as \\ud800), which is not Unicode text; send UTF-8, and escape a "
        "character outside the BMP only as a full surrogate pair",
        code="invalid_text",
        param=param,
    )


def _lone_surrogate_at(data: object) -> list[str] | None:
    """The path to a string (or a key) with a lone surrogate in it, or None.

    Iterative: the body may nest as deep as `json` parsed it.
    """
    todo: list[tuple[list[str], object]] = [([], data)]
    while todo:
        path, value = todo.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                # The key goes into the error message: escaped, so the answer stays encodable.
                here = [*path, key.encode("utf-8", "backslashreplace").decode()]
                if _SURROGATE.search(key):
                    return here
                todo.append((here, item))
        elif isinstance(value, list):
            todo.extend(([*path, str(i)], item) for i, item in enumerate(value))
    return None
