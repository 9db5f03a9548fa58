"""Who may connect: the bearer token check and the refusal to serve the network unprotected."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from pgwatch_cli.commands.serve.scopes import ASGI_SCOPE_KEY, Authenticator, Refused, refusal
from pgwatch_cli.errors import UsageProblem

# Load balancers and uptime checks probe this without credentials; it reveals no data.
PUBLIC_PATHS = frozenset({"/healthz"})


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
    )


def check_exposure(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to serve a non-loopback address without a token unless told it is fine."""
    if token or insecure or is_loopback(host):
        return
    raise UsageProblem(
        f"Refusing to serve {host} without a token: anyone on the network could read the events.",
        hint="Set --token (or BOOKWATCH_TOKEN), or pass --insecure if that is really intended.",
    )


def presented_token(scope: Scope) -> str | None:
    """The token a request carries: ``Authorization: Bearer T``, or ``?token=T`` (EventSource
    cannot send headers)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            header: str = value.decode("latin-1")
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
    query: bytes = scope.get("query_string", b"")
    for key, given in parse_qsl(query.decode("latin-1")):
        if key == "token":
            return given
    return None


class TokenAuth:
    """ASGI middleware: every path but PUBLIC_PATHS needs the shared token or a signed one,
    else 401; a signed token's Scope is left in the ASGI scope for the handlers."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self._auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            try:
                granted = scope[ASGI_SCOPE_KEY] = self._auth.grant(presented_token(scope))
            except Refused as exc:
                response = JSONResponse(
                    {"error": str(exc)},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="bookwatch"'},
                )
                await response(scope, receive, send)
                return
            forbidden = refusal(scope["path"], granted)
            if forbidden is not None:
                await JSONResponse({"error": forbidden}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def host_allowed(host_header: str | None, bound_host: str) -> bool:
    """Without a token, only a ``Host`` naming a loopback address (or the bound host) is
    served: a DNS-rebinding page reaches the server under its own name, which is neither.
    With a wildcard bind, an address literal is fine too (rebinding needs a name)."""
    if host_header is None:  # HTTP/1.0 without Host: no browser sends that
        return True
    name = _host_name(host_header.strip().lower())
    if name is None:
        return False
    bound = bound_host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost") or name == bound:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or bound in ("0.0.0.0", "::", "")


def _host_name(host: str) -> str | None:
    """The name part of a ``Host`` header (``[::1]:8765`` → ``::1``); None if malformed."""
    if host.startswith("["):
        name, bracket, port = host[1:].partition("]")
        if not bracket or (port and not (port.startswith(":") and port[1:].isdigit())):
            return None
        return name
    name, _, port = host.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".")
