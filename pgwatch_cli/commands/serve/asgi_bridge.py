"""Runs the Starlette app (everything but ``/events``) behind aiohttp's server.

aiohttp serves the streams because its requests expose their transport; the rest of the HTTP
surface stays a plain ASGI app (routes, CORS, token middleware, the demo API). The request
body is read here, bounded: over ``max_body`` bytes the answer is 413 and the connection is
closed, so a huge upload is never held in memory or read to its end.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from starlette.types import ASGIApp, Message

MAX_BODY_BYTES = 1 << 20


def too_large(max_body: int) -> web.Response:
    response = web.json_response(
        {"error": f"request body over {max_body} bytes"}, status=413)
    # The rest of the body is not read: the connection cannot be used for another request.
    response.force_close()
    return response


class AsgiBridge:
    def __init__(self, app: ASGIApp, *, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > self.max_body:
            return too_large(self.max_body)
        body = bytearray()
        async for piece in request.content.iter_any():
            body += piece
            if len(body) > self.max_body:
                return too_large(self.max_body)
        exchange = _Exchange(request, bytes(body))
        await self.app(scope_of(request), exchange.receive, exchange.send)
        if exchange.response is None:
            return web.Response(status=500)
        if not exchange.response.prepared:
            await exchange.response.prepare(request)
        return exchange.response


def scope_of(request: web.BaseRequest) -> dict[str, Any]:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    local = transport.get_extra_info("sockname") if transport is not None else None
    url = request.rel_url
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": url.raw_path.encode(),
        "query_string": url.raw_query_string.encode(),
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.raw_headers],
        "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
        "server": tuple(local[:2]) if isinstance(local, tuple) else None,
        "state": {},
    }


class _Exchange:
    """The ASGI ``receive``/``send`` pair of one request."""

    def __init__(self, request: web.BaseRequest, body: bytes) -> None:
        self.request = request
        self.body: bytes | None = body
        self.response: web.StreamResponse | None = None

    async def receive(self) -> Message:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        # Nothing more will come; aiohttp cancels the handler when the client goes away.
        await asyncio.get_running_loop().create_future()
        return {"type": "http.disconnect"}  # pragma: no cover - never resolved

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            started = web.StreamResponse(status=message["status"])
            for raw_name, raw_value in message.get("headers", ()):
                name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
                if name.lower() == "content-length":
                    started.content_length = int(value)
                else:
                    started.headers.add(name, value)
            self.response = started
        elif kind == "http.response.body":
            response = self.response
            assert response is not None, "body before the response started"
            if not response.prepared:
                await response.prepare(self.request)
            body = message.get("body", b"")
            if body:
                await response.write(body)
            if not message.get("more_body", False):
                await response.write_eof()
