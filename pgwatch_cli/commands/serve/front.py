"""The first handler of every request: the ``Host`` rule, then ``GET /events`` to the streams
and everything else to the Starlette app."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable

from aiohttp import web
from starlette.types import ASGIApp

from pgwatch_cli.commands.serve import logs, scopes
from pgwatch_cli.commands.serve.app import AppSettings, BadRequest, cors_options, stream_request
from pgwatch_cli.commands.serve.asgi_bridge import AsgiBridge
from pgwatch_cli.commands.serve.security import host_allowed
from pgwatch_cli.commands.serve.streams import Relay, bad_request

EVENTS_PATH = "/events"


class Front:
    def __init__(self, relay: Relay, settings: AppSettings, rest: ASGIApp, bound_host: str) -> None:
        self.relay = relay
        self.settings = settings
        self.rest = AsgiBridge(rest)
        self.bound_host = bound_host
        self.auth = scopes.Authenticator(settings.token, settings.token_secret)
        options = cors_options(settings)
        self._origins = set(options["allow_origins"])
        self._expose = ", ".join(options["expose_headers"])

    # Plain functions that return the coroutine to await: an open stream then keeps one
    # coroutine frame alive (Relay.open's), not three (memory per idle stream).
    def __call__(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        if not self.auth.enabled and not host_allowed(request.headers.get("Host"),
                                                       self.bound_host):
            response = web.json_response(
                {"error": "this server answers only to a loopback name or the address it is "
                          "bound to (set a token to serve other names)"}, status=421)
            response.force_close()
            return _ready(response)
        if request.path == EVENTS_PATH:
            if request.method in ("GET", "HEAD"):
                return self.events(request)
            if request.method != "OPTIONS":  # a preflight is the CORS middleware's
                return _ready(web.json_response({"error": "method not allowed"}, status=405,
                                                headers={"Allow": "GET, HEAD"}))
        return self.rest(request)

    def events(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        cors = self._cors(request.headers.get("Origin"))
        scope = None
        if self.auth.enabled:
            try:
                scope = self.auth.grant(_presented(request))
            except scopes.Refused as exc:
                return _ready(web.json_response(
                    {"error": str(exc)}, status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="bookwatch"', **cors}))
        try:
            wanted = stream_request(request.query, request.headers.get("Last-Event-ID"))
            # scopes hook: the token narrows the filters and names the viewer
            scopes.check_viewer(scope, wanted.viewer)
        except BadRequest as exc:
            return _ready(bad_request(str(exc), cors))
        except scopes.Forbidden as exc:
            return _ready(web.json_response({"error": str(exc)}, status=403, headers=cors))
        if scope is not None:
            wanted = dataclasses.replace(
                wanted, filters=scopes.scoped_filters(wanted.filters, scope), scope=scope)
        if request.method == "HEAD":
            return _ready(web.Response(content_type="text/event-stream", headers=cors))
        logs.stream_opened(request)
        return self.relay.open(request, wanted, cors)

    def _cors(self, origin: str | None) -> dict[str, str]:
        """The headers Starlette's CORS middleware puts on a simple request's answer."""
        if origin is None:
            return {}
        if "*" in self._origins:
            return {"Access-Control-Allow-Origin": "*",
                    "Access-Control-Expose-Headers": self._expose}
        if origin in self._origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                    "Access-Control-Expose-Headers": self._expose}
        return {}


def _presented(request: web.BaseRequest) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else request.query.get("token")


async def _ready(response: web.StreamResponse) -> web.StreamResponse:
    return response
