"""Request size bound as pure ASGI middleware (it must see the body before FastAPI parses it)."""

from __future__ import annotations

from typing import Any

from raftloop_core.api import ApiError, error_response

Scope = dict[str, Any]


class BodyLimit:
    """Answer 413 in the OpenAI envelope for bodies over `max_bytes`, chunked ones included."""

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> Any:
        return error_response(
            ApiError(
                413,
                f"request body is larger than {self.max_bytes} bytes "
                "(GATEWAY_MAX_REQUEST_BYTES); send a shorter conversation",
                code="request_too_large",
            )
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Check the declared length, then the bytes actually received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            message: dict[str, Any] = await receive()
            return message

        await self.app(scope, replay, send)
