"""Which events a consumer wants: the filters shared by ``tail`` and ``serve``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pgwatch_cli.stream.events import ChangeEvent


@dataclass(frozen=True)
class Filters:
    """Which events to show: AND across kinds, OR within one kind; an empty kind matches all."""

    tables: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()
    actors: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        tables: Iterable[str] = (),
        actions: Iterable[str] = (),
        ids: Iterable[str] = (),
        actors: Iterable[str] = (),
    ) -> Filters:
        return cls(
            frozenset(tables),
            frozenset(action.upper() for action in actions),
            frozenset(ids),
            frozenset(actors),
        )

    def matches(self, event: ChangeEvent) -> bool:
        if self.tables and not (
            event.table in self.tables or f"{event.schema_name}.{event.table}" in self.tables
        ):
            return False
        if self.actions and event.action not in self.actions:
            return False
        # Ids arrive as JSON numbers, strings or uuids; the command line gives text.
        if self.ids and event.id_text not in self.ids:
            return False
        return not self.actors or event.actor in self.actors
