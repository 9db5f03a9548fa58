"""The one routing table of ``bookwatch serve``: method and path to handler, nothing else.

Paths are matched whole against a regular expression; named groups become ``params``. The
gate (gate.py) decides who may call a route before the table is asked which one it is.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from pgwatch_cli.auth import Scope


@dataclass
class Call:
    """One admitted request, as a handler sees it."""

    request: web.BaseRequest
    params: dict[str, str] = field(default_factory=dict)
    cors: dict[str, str] = field(default_factory=dict)  # headers the answer must carry
    body: bytes = b""  # read by the gate, bounded
    scope: Scope | None = None  # a signed token's; None: the shared token, or none needed


Handler = Callable[[Call], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # a regular expression matched against the whole path
    handler: Handler
    # A streaming handler prepares its own response (with ``call.cors``) and may run for hours.
    streams: bool = False


@dataclass(frozen=True)
class Found:
    route: Route
    params: dict[str, str]


@dataclass(frozen=True)
class NotAllowed:
    allowed: tuple[str, ...]


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = [(re.compile(route.path), route) for route in routes]

    def find(self, method: str, path: str) -> Found | NotAllowed | None:
        """The route for ``method path``; NotAllowed when only other methods have one."""
        others: list[str] = []
        for pattern, route in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return Found(route, match.groupdict())
            others.append(route.method)
        return NotAllowed(tuple(dict.fromkeys(others))) if others else None
