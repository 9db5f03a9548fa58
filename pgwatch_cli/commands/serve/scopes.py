"""Scoped tokens in ``serve``: who a request is, and what of the events, replay and presence
its token lets it see (docs/reference.md, serve, Security).

The rest of serve calls in at a few marked hooks (search for ``scopes.``): the front door
(``Authenticator``), ``GET /events`` (``scoped_request``, whose filters carry the scope into the
fan-out's and the replay's ``matches``; ``expire_at`` for the token's end), presence
(``presence_key``, ``shown_entity``, ``visible_presence``) and the other paths (``refusal``).
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

from pgwatch_cli.auth import InvalidToken, Scope, TokenExpired, verify
from pgwatch_cli.auth.scope import facts
from pgwatch_cli.commands.serve import sse
from pgwatch_cli.stream.events import ChangeEvent
from pgwatch_cli.stream.filters import Filters

EXPIRED_REASON = "token-expired"
# Presence keys of tenant-scoped viewers: ``bookings:5\x1f7``. Two tenants' row 5 (or one
# tenant pretending to view another's row) are different keys, so neither sees the other's
# viewers. A viewer's ``viewing`` never holds a control character (presence.check).
_TENANT_MARK = "\x1f"
ASGI_SCOPE_KEY = "bookwatch.token_scope"


class Refused(Exception):
    """The request's token is missing, wrong, forged or expired (401)."""


class Forbidden(Exception):
    """A valid token asks for something it does not grant (403)."""


class Authenticator:
    """The front door: the shared ``--token`` and/or tokens signed with the secret.

    ``grant`` returns the requester's Scope, or None for the shared token (sees everything).
    """

    def __init__(self, shared: str | None, secret: bytes | None) -> None:
        self._shared = shared.encode() if shared else None
        self._secret = secret

    @property
    def enabled(self) -> bool:
        return self._shared is not None or self._secret is not None

    def grant(self, presented: str | None) -> Scope | None:
        if presented is None:
            raise Refused("missing token")
        # compare_digest: the time taken must not reveal how much of a guess was right.
        if self._shared is not None and hmac.compare_digest(presented.encode(), self._shared):
            return None
        if self._secret is None:
            raise Refused("missing or wrong token")
        try:
            return verify(presented, self._secret)
        except TokenExpired:
            raise Refused(EXPIRED_REASON) from None
        except InvalidToken as exc:
            raise Refused(f"invalid token: {exc}") from None


@dataclass(frozen=True)
class ScopedFilters(Filters):
    """A stream's filters narrowed by its token: the fan-out and the replay ask ``matches``
    as for any Filters; the fan-out never takes its index as the whole answer."""

    scope: Scope = dataclasses.field(kw_only=True)

    def matches(self, event: ChangeEvent) -> bool:
        if (self.tables or self.actions or self.ids or self.actors) and not Filters.matches(
                self, event):
            return False
        return self.scope.allows(event)


# -- the fan-out's index ---------------------------------------------------------------------

TENANT_INDEX = "tenant"
IndexKeys = tuple[tuple[str, frozenset[str]], bool]


def index_keys(filters: ScopedFilters, unscoped: IndexKeys) -> IndexKeys:
    """Where the fan-out files a scoped stream (``unscoped``: where its filters alone would
    put it), and whether being found there is the whole answer.

    A tenant's stream is filed under ``table\x1ftenant`` for each table it may read, so an
    event only visits the streams of its own tenant; a stream scoped to rows, under those
    rows; one scoped to tables, under those tables. Where the index says everything (no
    other filter, no schema-qualified name) the stream needs no check of its own, and the
    fan-out costs what it costs with the shared token."""
    scope = filters.scope
    names = filters.tables or scope.tables
    if names is None:  # every table
        if scope.ids is not None:
            return ("id", filters.ids & scope.ids if filters.ids else scope.ids), False
        return unscoped[0], unscoped[1] and scope.tenant is None
    tables = frozenset(name.rsplit(".", 1)[-1] for name in names)
    everything_bare = tables == names
    if filters.tables and scope.tables is not None:
        allowed = frozenset(name.rsplit(".", 1)[-1] for name in scope.tables)
        tables &= allowed
        everything_bare = everything_bare and allowed == scope.tables
    exact = (everything_bare and scope.ids is None
             and not (filters.actions or filters.ids or filters.actors))
    if scope.tenant is not None:
        return (TENANT_INDEX, _interned(frozenset(
            f"{table}{_TENANT_MARK}{scope.tenant}" for table in tables))), exact
    if scope.ids is not None:
        return ("id", filters.ids & scope.ids if filters.ids else scope.ids), False
    if filters.ids:  # more selective than the tables
        return unscoped[0], False
    return ("table", _interned(tables)), exact


@functools.lru_cache(maxsize=4096)
def _interned(keys: frozenset[str]) -> frozenset[str]:
    """Thousands of streams of one tenant share one set of index keys."""
    return keys


def tenant_index_key(event: ChangeEvent) -> str | None:
    """The key under which the streams of ``event``'s table and tenant are filed."""
    table, _, _, tenant = facts(event)
    return None if tenant is None else f"{table}{_TENANT_MARK}{tenant}"


def scoped_filters(filters: Filters, scope: Scope | None) -> Filters:
    if scope is None:
        return filters
    return ScopedFilters(filters.tables, filters.actions, filters.ids, filters.actors,
                         scope=scope)


def check_viewer(scope: Scope | None, viewer: str | None) -> None:
    """A scoped token announces its holder, no one else."""
    if scope is not None and viewer is not None and viewer != scope.sub:
        raise Forbidden(f"viewer must be the token's sub ({scope.sub!r})")


# -- presence -------------------------------------------------------------------------------


def presence_key(scope: Scope | None, viewing: str) -> str | None:
    """Where a stream viewing ``viewing`` joins presence; None: the token does not allow that
    row, and the join is ignored."""
    if scope is None:
        return viewing
    if not scope.allows_presence(viewing):
        return None
    return viewing if scope.tenant is None else f"{viewing}{_TENANT_MARK}{scope.tenant}"


def shown_entity(key: str) -> str:
    """The ``entity`` a presence frame names for a presence key."""
    return key.partition(_TENANT_MARK)[0]


def visible_presence(snapshot: Mapping[str, list[str]],
                     scope: Scope | None) -> dict[str, list[str]]:
    """``GET /presence`` for one requester: a tenant's token sees its tenant's viewers of rows
    it may read; other tokens see everyone on the rows they may read."""
    merged: dict[str, set[str]] = {}
    for key, viewers in snapshot.items():
        entity, _, tenant = key.partition(_TENANT_MARK)
        if scope is not None:
            if scope.tenant is not None and tenant != scope.tenant:
                continue
            if not scope.allows_presence(entity):
                continue
        merged.setdefault(entity, set()).update(viewers)
    return {entity: sorted(names) for entity, names in sorted(merged.items())}


# -- the rest -------------------------------------------------------------------------------


# Paths whose answers are not filtered per token — server-wide figures (clients and events of
# every tenant) and the demo's API (every booking, and writes to any) — are only for the
# shared token or an unrestricted signed one (``--table '*'``, no tenant, no ids).
def refusal(path: str, scope: Scope | None) -> str | None:
    """Why a request for ``path`` with this token is forbidden (403); None: it is not."""
    if scope is None or scope.unrestricted:
        return None
    if path == "/metrics" or path.startswith("/api/"):
        return f"this token may not use {path}: it is scoped (tables, rows or tenant)"
    return None


def expired_frame() -> bytes:
    """``event: reset`` without an ``id:``: the client's Last-Event-ID stays the last event it
    received, so it resumes with a fresh token and loses nothing."""
    return sse.frame(json.dumps({"reason": EXPIRED_REASON}), event="reset")
