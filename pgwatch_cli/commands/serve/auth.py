"""Who is this client: the bearer token check, and what repeated wrong guesses cost.

A wrong or missing token is logged (rate-limited: one line per ``LOG_EVERY_S`` with the count
since the last one; the token itself never), and an address that failed ``BLOCK_AFTER`` times
within ``WINDOW_S`` gets 429 with ``Retry-After`` until its window has passed, without its
guesses being checked at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from pgwatch_cli import console
from pgwatch_cli.auth import Scope
from pgwatch_cli.commands.serve import scopes

BLOCK_AFTER = 20
WINDOW_S = 60.0
LOG_EVERY_S = 10.0
# Addresses remembered at most (an attacker with many addresses must not grow this forever).
REMEMBERED_ADDRESSES = 10_000


def presented_token(request: web.BaseRequest) -> str | None:
    """``Authorization: Bearer T``, or ``?token=T`` (EventSource cannot send headers)."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    return request.query.get("token")


@dataclass
class _Failures:
    count: int
    since: float


class Guesses:
    """Failed token checks per client address, and the rate-limited log line about them."""

    def __init__(self, *, block_after: int = BLOCK_AFTER, window_s: float = WINDOW_S,
                 log_every_s: float = LOG_EVERY_S, say: Callable[[str], None] = console.warn,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.block_after = block_after
        self.window_s = window_s
        self.log_every_s = log_every_s
        self._say = say
        self._clock = clock
        self._by_address: dict[str, _Failures] = {}
        self._unlogged = 0
        self._logged_at: float | None = None

    def blocked_for(self, address: str) -> float:
        """Seconds ``address`` must wait before its next guess is checked (0: go ahead)."""
        failures = self._by_address.get(address)
        if failures is None:
            return 0.0
        left = failures.since + self.window_s - self._clock()
        if left <= 0:
            del self._by_address[address]
            return 0.0
        return left if failures.count >= self.block_after else 0.0

    def failed(self, address: str) -> None:
        now = self._clock()
        failures = self._by_address.get(address)
        if failures is None or now - failures.since > self.window_s:
            if len(self._by_address) >= REMEMBERED_ADDRESSES:
                self._forget_expired(now)
            self._by_address[address] = _Failures(1, now)
        else:
            failures.count += 1
        self._unlogged += 1
        if self._logged_at is None or now - self._logged_at >= self.log_every_s:
            count, self._unlogged, self._logged_at = self._unlogged, 0, now
            self._say(f"{count} request(s) with a missing or wrong token (latest from "
                      f"{address}); an address is refused for {self.window_s:g} s after "
                      f"{self.block_after} failures")

    def _forget_expired(self, now: float) -> None:
        for address, failures in list(self._by_address.items()):
            if now - failures.since > self.window_s:
                del self._by_address[address]
        while len(self._by_address) >= REMEMBERED_ADDRESSES:
            del self._by_address[next(iter(self._by_address))]


class TokenCheck:
    """The one place that decides whether a request may read, and what: the shared bearer
    token, or a token signed with ``--token-secret-file`` whose scope narrows what it sees.

    ``admit`` answers the refusal to send, or the requester's Scope (None: sees everything)."""

    def __init__(self, auth: scopes.Authenticator, guesses: Guesses | None = None) -> None:
        self._auth = auth
        self.guesses = guesses or Guesses()

    def admit(self, request: web.BaseRequest,
              cors: dict[str, str]) -> web.Response | Scope | None:
        address = request.remote or "-"
        wait = self.guesses.blocked_for(address)
        if wait > 0:
            return web.json_response(
                {"error": "too many wrong tokens from this address; try again later"},
                status=429, headers={"Retry-After": str(max(1, round(wait))), **cors})
        try:
            granted = self._auth.grant(presented_token(request))
        except scopes.Refused as exc:
            # An expired token is no guess: its holder fetches a new one (getToken).
            if str(exc) != scopes.EXPIRED_REASON:
                self.guesses.failed(address)
            return web.json_response(
                {"error": str(exc)}, status=401,
                headers={"WWW-Authenticate": 'Bearer realm="bookwatch"', **cors})
        forbidden = scopes.refusal(request.path, granted)
        if forbidden is not None:
            return web.json_response({"error": forbidden}, status=403, headers=cors)
        return granted
