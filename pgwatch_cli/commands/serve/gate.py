"""The first handler of every request, and the only place that decides whether it is served:
the ``Host`` rule (421), CORS (preflights answered, headers on every answer), who the client is
and what it may read (the token: 401/429), the route (404/405) and the body limit (413).

Streams are handed over without a wrapper coroutine: an open stream keeps one coroutine frame
alive (its handler's), not three (memory per idle stream).
"""

from __future__ import annotations

from collections.abc import Awaitable

from aiohttp import web

from pgwatch_cli.auth import Scope
from pgwatch_cli.commands.serve.auth import TokenCheck
from pgwatch_cli.commands.serve.cors import Cors
from pgwatch_cli.commands.serve.routing import Call, Found, NotAllowed, Route, RouteTable
from pgwatch_cli.commands.serve.security import host_allowed

MAX_BODY_BYTES = 1 << 20
# Load balancers and uptime checks probe this without credentials; it reveals no data.
PUBLIC_PATHS = frozenset({"/healthz"})
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class Gate:
    def __init__(self, routes: RouteTable, cors: Cors, *, token: TokenCheck | None,
                 bound_host: str, max_body: int = MAX_BODY_BYTES) -> None:
        self.routes = routes
        self.cors = cors
        self.token = token
        self.bound_host = bound_host
        self.max_body = max_body

    def __call__(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        if self.token is None and not host_allowed(request.headers.get("Host"), self.bound_host):
            response = web.json_response(
                {"error": "this server answers only to a loopback name or the address it is "
                          "bound to (set a token to serve other names)"}, status=421)
            response.force_close()
            return _ready(response)
        if Cors.is_preflight(request):
            return _ready(self.cors.preflight(request))
        cors = self.cors.headers(request)
        scope: Scope | None = None
        if self.token is not None and request.path not in PUBLIC_PATHS:
            admitted = self.token.admit(request, cors)
            if isinstance(admitted, web.Response):
                return _ready(admitted)
            scope = admitted
        found = self.routes.find(request.method, request.path)
        if found is None:
            return _ready(web.json_response({"error": "not found"}, status=404, headers=cors))
        if isinstance(found, NotAllowed):
            allow = ", ".join(found.allowed + (("HEAD",) if "GET" in found.allowed else ()))
            return _ready(web.json_response({"error": "method not allowed"}, status=405,
                                            headers={"Allow": allow, **cors}))
        call = Call(request, found.params, cors, scope=scope)
        if found.route.streams:
            return found.route.handler(call)
        return self._answer(found, call)

    async def _answer(self, found: Found, call: Call) -> web.StreamResponse:
        route: Route = found.route
        request = call.request
        if request.method not in _BODILESS:
            body = await self._read_body(request)
            if body is None:
                return too_large(self.max_body, call.cors)
            call.body = body
        response = await route.handler(call)
        if not response.prepared:
            for name, value in call.cors.items():
                response.headers.setdefault(name, value)
        return response

    async def _read_body(self, request: web.BaseRequest) -> bytes | None:
        """The body, or None when it is over ``max_body`` (never read further than that)."""
        length = request.content_length
        if length is not None and length > self.max_body:
            return None
        body = bytearray()
        async for piece in request.content.iter_any():
            body += piece
            if len(body) > self.max_body:
                return None
        return bytes(body)


def too_large(max_body: int, cors: dict[str, str]) -> web.Response:
    response = web.json_response(
        {"error": f"request body over {max_body} bytes"}, status=413, headers=cors)
    # The rest of the body is not read: the connection cannot be used for another request.
    response.force_close()
    return response


async def _ready(response: web.StreamResponse) -> web.StreamResponse:
    return response
