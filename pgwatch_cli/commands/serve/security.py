"""Where a server may listen and which ``Host`` it answers to: the refusal to serve the network
unprotected (or behind a guessable token) and the DNS-rebinding rule."""

from __future__ import annotations

import ipaddress
import socket

from pgwatch_cli.errors import UsageProblem

# A token that guards a network address must resist guessing: at least this long and made of
# at least this many different characters (``openssl rand -hex 16`` and
# ``python -c 'import secrets; print(secrets.token_urlsafe(16))'`` both qualify).
MIN_TOKEN_LENGTH = 16
MIN_TOKEN_VARIETY = 8


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


def check_exposure(
    host: str, token: str | None, insecure: bool, *, signed: bool = False
) -> None:
    """Refuse to serve a non-loopback address without a token or with a token weak enough to
    guess, unless told (``--insecure``) that it is fine. Signed tokens (``signed``: a secret
    of at least 32 bytes, checked where it is read) protect it as a strong shared one does."""
    if insecure or is_loopback(host) or (signed and not token):
        return
    if token:
        problem = token_weakness(token)
        if problem is not None:
            raise UsageProblem(
                f"Refusing to serve {host} with a weak token: {problem}.",
                hint="Use a random one, e.g. BOOKWATCH_TOKEN=$(openssl rand -hex 16).",
            )
        return
    raise UsageProblem(
        f"Refusing to serve {host} without a token: anyone on the network could read the events.",
        hint="Set --token (or BOOKWATCH_TOKEN), or pass --insecure if that is really intended.",
    )


def token_weakness(token: str) -> str | None:
    """Why ``token`` is too weak to guard a network address (None: strong enough)."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"it has {len(token)} characters, at least {MIN_TOKEN_LENGTH} are needed"
    if len(set(token)) < MIN_TOKEN_VARIETY:
        return (f"it uses {len(set(token))} different characters, at least "
                f"{MIN_TOKEN_VARIETY} are needed")
    return None


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
