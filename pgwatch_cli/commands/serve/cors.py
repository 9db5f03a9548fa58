"""CORS for the pages of other origins that ``--allow-origin`` lets in.

A simple request's answer carries ``Access-Control-Allow-Origin`` when the origin is allowed;
a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered here, before any
token check (browsers never send credentials with one). A refused origin only shows in the
browser's console, so the server says once per origin which ``--allow-origin`` would admit it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web

from pgwatch_cli import console

ALLOW_METHODS = ("GET", "PUT")
MAX_AGE_S = 600
# A page may send any number of origins; remembering them must not grow without end.
REMEMBERED_REFUSALS = 1000


class Cors:
    def __init__(self, origins: Sequence[str], *, allow_headers: Sequence[str],
                 expose_headers: Sequence[str],
                 say: Callable[[str], None] = console.warn) -> None:
        self._origins = frozenset(origins)
        self._any = "*" in self._origins
        self._allow_headers = tuple(allow_headers)
        self._allowed_lower = frozenset(name.lower() for name in allow_headers)
        self._expose = ", ".join(expose_headers)
        self._say = say
        self._refused: set[str] = set()

    def allows(self, origin: str) -> bool:
        return self._any or origin in self._origins

    def headers(self, request: web.BaseRequest) -> dict[str, str]:
        """What a simple request's answer carries (nothing when no allowed Origin was sent)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return {}
        if self._any:
            return {"Access-Control-Allow-Origin": "*",
                    "Access-Control-Expose-Headers": self._expose}
        if origin in self._origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                    "Access-Control-Expose-Headers": self._expose}
        self._refuse(origin, request)
        return {}

    @staticmethod
    def is_preflight(request: web.BaseRequest) -> bool:
        return (request.method == "OPTIONS" and "Origin" in request.headers
                and "Access-Control-Request-Method" in request.headers)

    def preflight(self, request: web.BaseRequest) -> web.Response:
        origin = request.headers["Origin"]
        method = request.headers["Access-Control-Request-Method"]
        asked = [name.strip() for name in
                 request.headers.get("Access-Control-Request-Headers", "").split(",")
                 if name.strip()]
        problems = []
        if not self.allows(origin):
            problems.append("origin")
            self._refuse(origin, request)
        if method not in ALLOW_METHODS:
            problems.append("method")
        if any(name.lower() not in self._allowed_lower for name in asked):
            problems.append("headers")
        headers = {
            "Access-Control-Allow-Methods": ", ".join(ALLOW_METHODS),
            "Access-Control-Allow-Headers": ", ".join(self._allow_headers),
            "Access-Control-Max-Age": str(MAX_AGE_S),
            "Vary": "Origin",
        }
        if problems:
            return web.Response(status=400, text="Disallowed CORS " + ", ".join(problems),
                                headers=headers)
        headers["Access-Control-Allow-Origin"] = "*" if self._any else origin
        return web.Response(status=200, text="OK", headers=headers)

    def _refuse(self, origin: str, request: web.BaseRequest) -> None:
        if origin in self._refused or _same_origin(origin, request.headers.get("Host")):
            return
        if len(self._refused) >= REMEMBERED_REFUSALS:
            self._refused.clear()
        self._refused.add(origin)
        shown = origin[:200]
        self._say(f"refused a page of origin {shown} (CORS); to let it in, start serve with "
                  f"--allow-origin {shown}")


def _same_origin(origin: str, host: str | None) -> bool:
    """A page served by this server (the demo) sends its own origin with a PUT: not a refusal."""
    if host is None:
        return False
    _, _, rest = origin.partition("://")
    return rest.lower() == host.strip().lower()
