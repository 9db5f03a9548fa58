"""What one token lets its holder read: a table, row and tenant check per event, cheap enough
for the fan-out's hot loop (sets built once per token, the event's facts once per event)."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgwatch_cli.stream.events import ChangeEvent

ALL_TABLES = "*"
MAX_CLAIM_ITEMS = 1000
MAX_CLAIM_TEXT = 200
_CONTROL = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class ClaimProblem(ValueError):
    """A claim a scope cannot be built from."""


@dataclass(frozen=True, eq=False, slots=True)
class Scope:
    """``tables`` None: every table; ``ids`` None: every row; ``tenant`` None: rows of any
    tenant and rows without one. A tenant-scoped token sees only events carrying its tenant."""

    sub: str
    tables: frozenset[str] | None
    ids: frozenset[str] | None
    tenant: str | None
    expires_at: float

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Scope:
        """Raises ClaimProblem naming the claim that cannot be used."""
        sub = _text(claims.get("sub"), "sub")
        tables = _texts(claims.get("tables"), "tables")
        if not tables:
            raise ClaimProblem("the token's 'tables' claim must name at least one table")
        ids = _texts(claims["ids"], "ids") if claims.get("ids") is not None else None
        tenant = claims.get("tenant")
        tenant_text = None if tenant is None else _text(tenant, "tenant")
        expires = claims.get("exp")
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            raise ClaimProblem("the token's 'exp' claim must be a number")
        return cls(sub=sub, tables=None if ALL_TABLES in tables else _table_set(tuple(tables)),
                   ids=None if ids is None else frozenset(ids), tenant=tenant_text,
                   expires_at=float(expires))

    @property
    def unrestricted(self) -> bool:
        """Sees everything a shared ``--token`` sees (server-wide figures included)."""
        return self.tables is None and self.ids is None and self.tenant is None

    def allows(self, event: ChangeEvent) -> bool:
        table, qualified, row, tenant = facts(event)
        tables = self.tables
        if tables is not None and table not in tables and qualified not in tables:
            return False
        if self.ids is not None and row not in self.ids:
            return False
        return self.tenant is None or tenant == self.tenant

    def allows_presence(self, entity: str) -> bool:
        """May this token's holder see or join the viewers of ``entity`` (``table:id``)?
        Rows of other tenants are kept apart by the caller (presence is keyed by tenant)."""
        table, _, row = entity.partition(":")
        if self.tables is not None and table not in self.tables:
            return False
        return self.ids is None or row in self.ids


@functools.lru_cache(maxsize=1024)
def _table_set(tables: tuple[str, ...]) -> frozenset[str]:
    """One set for the thousands of open streams whose tokens name the same tables."""
    return frozenset(tables)


def tenant_text(value: Any) -> str | None:
    """A tenant as compared: JSON 7 and "7" are the same tenant; null is no tenant."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    return str(value)


# The fan-out asks every client about the same event in a row: its facts are worked out once.
_last_event: ChangeEvent | None = None
_last_facts: tuple[str, str, str, str | None] = ("", "", "", None)


def facts(event: ChangeEvent) -> tuple[str, str, str, str | None]:
    """(table, schema.table, id text, tenant text) of ``event``."""
    global _last_event, _last_facts
    if event is _last_event:
        return _last_facts
    extra = event.model_extra
    tenant = tenant_text(extra.get("tenant")) if extra else None
    found = (event.table, f"{event.schema_name}.{event.table}", event.id_text, tenant)
    _last_event, _last_facts = event, found
    return found


def _text(value: Any, claim: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ClaimProblem(f"the token's {claim!r} claim must be text")
    text = str(value)
    if not text.strip() or len(text) > MAX_CLAIM_TEXT:
        raise ClaimProblem(f"the token's {claim!r} claim must be 1 to {MAX_CLAIM_TEXT} characters")
    if any(unicodedata.category(char) in _CONTROL for char in text):
        # Names are shown to other people (presence): no line breaks or invisible controls.
        raise ClaimProblem(f"the token's {claim!r} claim must not contain control characters")
    return text


def _texts(value: Any, claim: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_CLAIM_ITEMS:
        raise ClaimProblem(f"the token's {claim!r} claim must be a list "
                           f"(at most {MAX_CLAIM_ITEMS} items)")
    return [_text(item, claim) for item in value]
