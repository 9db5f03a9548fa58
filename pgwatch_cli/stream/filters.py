"""Which events a consumer wants: the filters shared by ``tail`` and ``serve``."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pgwatch_cli.stream.events import ChangeEvent, JsonValue


@dataclass(frozen=True)
class Filters:
    """Which events to show: AND across kinds, OR within one kind; an empty kind matches all.

    ``key_columns`` maps ``schema.table`` to its primary key columns in declared order: with it,
    a comma-separated ``--id`` of a composite key is read in that order (without it, in the
    order the event's ``pk`` lists them)."""

    tables: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()
    actors: frozenset[str] = frozenset()
    key_columns: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def of(
        cls,
        tables: Iterable[str] = (),
        actions: Iterable[str] = (),
        ids: Iterable[str] = (),
        actors: Iterable[str] = (),
        key_columns: Mapping[str, tuple[str, ...]] | None = None,
    ) -> Filters:
        return cls(
            frozenset(tables),
            frozenset(action.upper() for action in actions),
            frozenset(ids),
            frozenset(actors),
            tuple(sorted((key_columns or {}).items())),
        )

    def matches(self, event: ChangeEvent) -> bool:
        if self.tables and not (
            event.table in self.tables or f"{event.schema_name}.{event.table}" in self.tables
        ):
            return False
        if self.actions and event.action not in self.actions:
            return False
        if self.ids and not self._id_matches(event):
            return False
        return not self.actors or event.actor in self.actors

    def key_order(self, event: ChangeEvent) -> tuple[str, ...] | None:
        """The event's table's key columns in declared order, when known."""
        return _key_orders(self.key_columns).get(f"{event.schema_name}.{event.table}")

    def _id_matches(self, event: ChangeEvent) -> bool:
        pk = event.pk or {}
        if len(pk) <= 1:
            # Ids arrive as JSON numbers, strings or uuids; the command line gives text.
            return event.id_text in self.ids
        order = self.key_order(event)
        values = [key_text(pk.get(column)) for column in order or pk]
        positional = ",".join(values)
        labelled = frozenset(f"{column}={key_text(value)}" for column, value in pk.items())
        return any(
            wanted == positional or _labels(wanted) == labelled for wanted in self.ids
        )


def key_text(value: JsonValue) -> str:
    """A key value as the command line writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def labelled_key(event: ChangeEvent, order: tuple[str, ...] | None) -> str:
    """``col=value,...`` of a composite key (declared order when known); the id of another."""
    pk = event.pk or {}
    if len(pk) <= 1:
        return event.id_text
    return ",".join(f"{column}={key_text(pk.get(column))}" for column in order or pk)


def _labels(wanted: str) -> frozenset[str] | None:
    parts = wanted.split(",")
    if not all("=" in part for part in parts):
        return None
    return frozenset(part.strip() for part in parts)


@functools.lru_cache(maxsize=64)
def _key_orders(
    key_columns: tuple[tuple[str, tuple[str, ...]], ...],
) -> dict[str, tuple[str, ...]]:
    return dict(key_columns)
