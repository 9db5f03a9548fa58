"""The HTTP routes of ``bookwatch serve``: events, presence, health, metrics (and the demo)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pgwatch_cli import client
from pgwatch_cli.commands.serve import metrics, presence
from pgwatch_cli.commands.serve.security import TokenAuth
from pgwatch_cli.commands.serve.streams import Relay, StreamRequest
from pgwatch_cli.demo import api as demo_api
from pgwatch_cli.stream.events import ACTIONS
from pgwatch_cli.stream.filters import Filters

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class AppSettings:
    token: str | None = None
    allow_origins: Sequence[str] = field(default_factory=tuple)
    demo_schema: str | None = None  # serve the demo page and API on these tables


class BadRequest(ValueError):
    """A query parameter that cannot be used."""


def stream_request(request: Request) -> StreamRequest:
    """Parse ``GET /events``'s filters, resume point and presence parameters."""
    params = request.query_params
    actions = [action.upper() for action in params.getlist("action")]
    unknown = [action for action in actions if action not in ACTIONS]
    if unknown:
        raise BadRequest(f"unknown action {unknown[0]!r}; use one of {', '.join(ACTIONS)}")
    filters = Filters.of(
        params.getlist("table"), actions, params.getlist("id"), params.getlist("actor")
    )
    # The header wins: on reconnect the browser sends the newest id it saw, while the URL
    # still carries the one the page started from.
    raw = request.headers.get("last-event-id") or params.get("last_event_id") or ""
    try:
        resume_after = int(raw) if raw.strip() else None
    except ValueError:
        raise BadRequest(f"Last-Event-ID must be an event id (a seq), not {raw!r}") from None
    if resume_after is not None and resume_after < 0:
        raise BadRequest("Last-Event-ID cannot be negative")
    viewer, viewing = params.get("viewer"), params.get("viewing")
    if (viewer is None) != (viewing is None):
        raise BadRequest("presence needs both viewer=NAME and viewing=TABLE:ID")
    if viewer is not None and viewing is not None:
        try:
            presence.check(viewer, viewing)
        except presence.InvalidPresence as exc:
            raise BadRequest(str(exc)) from None
    return StreamRequest(filters, resume_after, viewer, viewing)


class EventsEndpoint:
    """``GET /events``: an endless ``text/event-stream`` (a plain ASGI app, not a Response)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            response = JSONResponse({"error": "method not allowed"}, status_code=405,
                                    headers={"Allow": "GET, HEAD"})
            await response(scope, receive, send)
            return
        try:
            parsed = stream_request(Request(scope, receive))
        except BadRequest as exc:
            await JSONResponse({"error": str(exc)}, status_code=400)(scope, receive, send)
            return
        if scope["method"] == "HEAD":
            await Response(media_type="text/event-stream")(scope, receive, send)
            return
        await self.relay.open(parsed)(scope, receive, send)


class StreamsFirst:
    """Hands ``/events`` straight to its endpoint, everything else to Starlette.

    Starlette's routing and exception middleware wrap ``send`` twice and keep state per
    request: for an endless stream that is paid on every event written to every client (and
    in memory per connection), with nothing to gain since the stream handles its own errors.
    """

    def __init__(self, events: EventsEndpoint, rest: ASGIApp) -> None:
        self.events = events
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/events":
            await self.events(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


def create_app(relay: Relay, settings: AppSettings) -> ASGIApp:
    async def presence_map(request: Request) -> Response:
        return JSONResponse(relay.presence.snapshot())

    async def healthz(request: Request) -> Response:
        connected = relay.stream.connected
        body = {
            "status": "ok" if connected else "degraded",
            "listener_connected": connected,
            "clients": len(relay.clients),
            "last_seq": relay.stream.last_seq,
        }
        return JSONResponse(body, status_code=200 if connected else 503)

    async def metrics_text(request: Request) -> Response:
        return PlainTextResponse(metrics.render(samples(relay)), media_type=PROMETHEUS_TEXT)

    async def client_script(request: Request) -> Response:
        return Response(client.script(), media_type=client.MEDIA_TYPE)

    routes: list[BaseRoute] = [
        Route("/bookwatch.js", client_script),
        Route("/presence", presence_map),
        Route("/healthz", healthz),
        Route("/metrics", metrics_text),
    ]
    if settings.demo_schema is not None:
        routes += demo_api.routes(relay.connections, settings.demo_schema, relay.stream.channel)

    app: ASGIApp = StreamsFirst(EventsEndpoint(relay), Starlette(routes=routes))
    if settings.token:
        app = TokenAuth(app, token=settings.token)
    # Outermost, so a browser's preflight (which never carries the token) is answered and a
    # 401 still carries the CORS headers the page needs to read it.
    return CORSMiddleware(
        app,
        allow_origins=list(settings.allow_origins),
        allow_methods=["GET", "PUT"],
        allow_headers=["Authorization", "If-Match", "Last-Event-ID", demo_api.ACTOR_HEADER],
        expose_headers=["ETag", demo_api.SEQ_HEADER],
    )


def samples(relay: Relay) -> list[metrics.Sample]:
    counters, stream, hub = relay.counters, relay.stream, relay.hub
    sample = metrics.Sample
    return [
        sample("bookwatch_sse_clients", "gauge", "Open SSE streams.", len(relay.clients)),
        sample("bookwatch_sse_streams_opened_total", "counter", "SSE streams opened.",
               counters.streams_opened),
        sample("bookwatch_sse_events_relayed_total", "counter",
               "Change events written to SSE clients (replayed ones included).",
               counters.events_relayed),
        sample("bookwatch_sse_resumes_total", "counter",
               "SSE streams that resumed with Last-Event-ID.", counters.resumes),
        sample("bookwatch_sse_replayed_total", "counter",
               "Events read from the change log for resuming clients.", counters.replayed),
        sample("bookwatch_sse_resets_total", "counter",
               "Reset events sent (log too short to resume, or client too slow).",
               counters.resets),
        sample("bookwatch_sse_lagging_clients_cut_total", "counter",
               "Clients closed because their buffer overflowed.", counters.lagging_cut),
        sample("bookwatch_presence_viewers", "gauge", "Open streams that announce a viewer.",
               relay.presence.viewer_count()),
        sample("bookwatch_listener_connected", "gauge",
               "1 while the LISTEN connection is up, else 0.", int(stream.connected)),
        sample("bookwatch_listener_reconnects_total", "counter",
               "Times the LISTEN connection was re-established.", stream.stats.reconnects),
        sample("bookwatch_listener_events_total", "counter",
               "Events the listener passed on (live and replayed).", stream.stats.delivered),
        sample("bookwatch_listener_invalid_payloads_total", "counter",
               "Payloads skipped because they were not valid v1 events.",
               stream.stats.invalid),
        sample("bookwatch_listener_last_seq", "gauge", "Newest seq seen (0: none yet).",
               stream.last_seq or 0),
        sample("bookwatch_hub_events_total", "counter", "Events fanned out by the hub.",
               hub.delivered),
    ]
