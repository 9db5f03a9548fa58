"""The HTTP surface of ``bookwatch serve``: its routes (the streams, presence, health, metrics,
the browser client, the demo) and the parsing of ``GET /events``'s parameters."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from pgwatch_cli import client
from pgwatch_cli.bus import hooks as bus_hooks
from pgwatch_cli.commands.serve import logs, metrics, presence, scopes
from pgwatch_cli.commands.serve.auth import TokenCheck
from pgwatch_cli.commands.serve.cors import Cors
from pgwatch_cli.commands.serve.gate import Gate
from pgwatch_cli.commands.serve.pauses import gc_stats
from pgwatch_cli.commands.serve.routing import Call, Route, RouteTable
from pgwatch_cli.commands.serve.streams import Relay, StreamRequest, bad_request
from pgwatch_cli.demo import api as demo_api
from pgwatch_cli.stream.events import ACTIONS
from pgwatch_cli.stream.filters import Filters

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class AppSettings:
    token: str | None = None
    token_secret: bytes | None = None  # signs scoped tokens (--token-secret-file)
    allow_origins: Sequence[str] = field(default_factory=tuple)
    demo_schema: str | None = None  # serve the demo page and API on these tables


class BadRequest(ValueError):
    """A query parameter that cannot be used."""


class Query(Protocol):
    def getall(self, key: str, default: list[str]) -> list[str]: ...

    def get(self, key: str) -> str | None: ...


# An event id as serve writes it (``sse.event_id``), or a bare seq from an older server. ASCII
# digits only: int() would also take "1_000" and Arabic-Indic digits.
_EVENT_ID = re.compile(r"(?:(?P<log>[0-9a-f]{1,32}):)?(?P<seq>[0-9]{1,18})", re.ASCII)


@functools.lru_cache(maxsize=4096)
def shared_filters(tables: tuple[str, ...], actions: tuple[str, ...], ids: tuple[str, ...],
                   actors: tuple[str, ...]) -> Filters:
    """One Filters object for every stream that asked for the same: thousands of streams with
    the same query hold one, not thousands (about 1 KB each)."""
    return Filters.of(tables, actions, ids, actors)


def stream_request(query: Query, last_event_id: str | None) -> StreamRequest:
    """Parse ``GET /events``'s filters, resume point and presence parameters."""
    actions = [action.upper() for action in query.getall("action", [])]
    unknown = [action for action in actions if action not in ACTIONS]
    if unknown:
        raise BadRequest(f"unknown action {unknown[0]!r}; use one of {', '.join(ACTIONS)}")
    filters = shared_filters(tuple(query.getall("table", [])), tuple(actions),
                             tuple(query.getall("id", [])), tuple(query.getall("actor", [])))
    # The header wins: on reconnect the browser sends the newest id it saw, while the URL
    # still carries the one the page started from.
    raw = (last_event_id or query.get("last_event_id") or "").strip(" \t")
    resume_log, resume_after = None, None
    if raw:
        match = _EVENT_ID.fullmatch(raw)
        if match is None:
            raise BadRequest(f"Last-Event-ID must be an event id (LOG:SEQ, or a seq of ASCII "
                             f"digits), not {raw[:40]!r}")
        resume_log, resume_after = match["log"], int(match["seq"])
    viewer, viewing = query.get("viewer"), query.get("viewing")
    if (viewer is None) != (viewing is None):
        raise BadRequest("presence needs both viewer=NAME and viewing=TABLE:ID")
    if viewer is not None and viewing is not None:
        try:
            presence.check(viewer, viewing)
        except presence.InvalidPresence as exc:
            raise BadRequest(str(exc)) from None
    return StreamRequest(filters, resume_after, resume_log, viewer, viewing)


def cors(settings: AppSettings) -> Cors:
    return Cors(
        settings.allow_origins,
        allow_headers=("Authorization", "If-Match", "Last-Event-ID", demo_api.ACTOR_HEADER),
        expose_headers=("ETag", demo_api.SEQ_HEADER),
    )


def health(relay: Relay) -> dict[str, Any]:
    connected = relay.stream.connected
    own = len(relay.clients)
    body: dict[str, Any] = {
        "status": "ok" if connected else "degraded",
        "listener_connected": connected,
        "clients": own,
        "last_seq": relay.stream.last_seq,
        **bus_hooks.health(relay.stream),
    }
    worker = relay.worker
    if worker.count > 1:
        body.update(worker=worker.index, workers=worker.count, pid=os.getpid(),
                    clients_all_workers=worker.total_clients(own))
    return body


def create_app(relay: Relay, settings: AppSettings, bound_host: str) -> Gate:
    """Every route behind the one gate (Host rule, CORS, token, body limit)."""

    def events(call: Call) -> Awaitable[web.StreamResponse]:
        request = call.request
        try:
            wanted = stream_request(request.query, request.headers.get("Last-Event-ID"))
            # scopes hook: the token names the viewer and narrows the filters
            scopes.check_viewer(call.scope, wanted.viewer)
        except BadRequest as exc:
            return _ready(bad_request(str(exc), call.cors))
        except scopes.Forbidden as exc:
            return _ready(web.json_response({"error": str(exc)}, status=403, headers=call.cors))
        if call.scope is not None:
            wanted = dataclasses.replace(
                wanted, filters=scopes.scoped_filters(wanted.filters, call.scope),
                scope=call.scope)
        if request.method == "HEAD":
            return _ready(web.Response(content_type="text/event-stream", headers=call.cors))
        logs.stream_opened(request)
        return relay.open(request, wanted, call.cors)

    async def presence_map(call: Call) -> web.StreamResponse:
        # scopes hook: a token sees the viewers of the rows (and tenant) it may read
        return web.json_response(scopes.visible_presence(relay.presence.snapshot(), call.scope))

    async def healthz(call: Call) -> web.StreamResponse:
        body = health(relay)
        return web.json_response(body, status=200 if body["listener_connected"] else 503)

    async def metrics_text(call: Call) -> web.StreamResponse:
        return web.Response(body=metrics.render(samples(relay)).encode(),
                            headers={"Content-Type": PROMETHEUS_TEXT})

    async def client_script(call: Call) -> web.StreamResponse:
        return web.Response(body=client.script(),
                            headers={"Content-Type": client.MEDIA_TYPE})

    routes = [
        Route("GET", "/events", events, streams=True),
        Route("GET", "/bookwatch.js", client_script),
        Route("GET", "/presence", presence_map),
        Route("GET", "/healthz", healthz),
        Route("GET", "/metrics", metrics_text),
    ]
    if settings.demo_schema is not None:
        routes += [Route(method, path, handler) for method, path, handler in
                   demo_api.routes(relay.connections, settings.demo_schema, relay.stream.channel)]
    auth = scopes.Authenticator(settings.token, settings.token_secret)
    token = TokenCheck(auth) if auth.enabled else None
    return Gate(RouteTable(routes), cors(settings), token=token, bound_host=bound_host)


async def _ready(response: web.StreamResponse) -> web.StreamResponse:
    return response


def samples(relay: Relay) -> list[metrics.Sample]:
    counters, stream, fanout = relay.counters, relay.stream, relay.fanout
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
        sample("bookwatch_hub_events_total", "counter", "Events fanned out.",
               fanout.delivered),
        sample("bookwatch_sse_refused_total", "counter",
               "Streams refused with 503 because --max-clients were open.", counters.refused),
        sample("bookwatch_sse_lag_skipped_total", "counter",
               "Events not relayed because they were older than --max-lag.",
               counters.lag_skipped),
        sample("bookwatch_sse_lag_resets_total", "counter",
               "Times every client was reset because the relay lagged.", counters.lag_resets),
        sample("bookwatch_sse_oversized_events_total", "counter",
               "Events sent as a reset because they were over the per-event size limit.",
               counters.oversized),
        sample("bookwatch_sse_budget_cut_total", "counter",
               "Clients reset because all clients' unsent bytes exceeded the process budget.",
               counters.budget_cut),
        sample("bookwatch_frame_cache_bytes", "gauge",
               "Bytes of encoded frames kept for resuming clients.", fanout.frames.size_bytes),
        sample("bookwatch_gc_gen2_collections_total", "counter",
               "Full garbage collections since start.", gc_stats.gen2_collections),
        sample("bookwatch_gc_pause_max_seconds", "gauge",
               "Longest garbage-collection pause since start.", gc_stats.longest_pause_s),
        sample("bookwatch_gc_long_pauses_total", "counter",
               "Garbage collections that paused the server 50 ms or more.",
               gc_stats.long_pauses),
        sample("bookwatch_worker", "gauge",
               "Which --workers process answered (0-based).", relay.worker.index),
        *(sample(*bus_sample) for bus_sample in bus_hooks.samples(stream)),
    ]
