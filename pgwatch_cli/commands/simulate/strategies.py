"""What a user's client does when another user's change to the open booking arrives."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pgwatch_cli.commands.simulate.bookings import LOCK_COLUMNS, Copy
from pgwatch_cli.stream.events import ChangeEvent


class Strategy(StrEnum):
    BASELINE = "baseline"
    REFRESH = "refresh"
    MERGE = "merge"

    @property
    def realtime(self) -> bool:
        return self is not Strategy.BASELINE


DESCRIPTIONS = {
    Strategy.BASELINE: "no realtime: the optimistic lock catches the stale save",
    Strategy.REFRESH: "on a change event, reload the booking, keep the pending edit, save",
    Strategy.MERGE: "rebase the pending edit on the event's diff; same column = conflict",
}

ReactionKind = Literal["reload", "rebase", "clash"]


@dataclass(frozen=True)
class Reaction:
    kind: ReactionKind
    changed: tuple[str, ...]  # what the other user changed (without the lock columns)


def concerns(event: ChangeEvent, copy: Copy, me: str) -> bool:
    """Is this another user's change to the booking I have open, newer than my copy?"""
    if event.table != "bookings" or event.action != "UPDATE" or event.id != copy.id:
        return False
    if event.actor == me:
        return False
    # Events committed before the copy was loaded can arrive after it: the version says so.
    new_version = _new_version(event)
    return new_version is None or new_version > copy.version


def _new_version(event: ChangeEvent) -> int | None:
    if event.diff is None or "version" not in event.diff:
        return None
    return int(event.diff["version"][1])


def react(strategy: Strategy, event: ChangeEvent, copy: Copy) -> Reaction:
    changed = tuple(c for c in event.changed or () if c not in LOCK_COLUMNS)
    if strategy is Strategy.REFRESH:
        return Reaction("reload", changed)
    if strategy is Strategy.MERGE:
        if set(changed) & set(copy.pending):
            return Reaction("clash", changed)
        # Without the full diff (dropped for size, excluded columns) only a reload is safe.
        if event.truncated or event.diff is None or not set(event.changed or ()) <= set(event.diff):
            return Reaction("reload", changed)
        return Reaction("rebase", changed)
    raise ValueError("the baseline does not react to events")


def rebase(copy: Copy, event: ChangeEvent) -> None:
    """Apply the other user's change to the open copy; the pending edit stays on top."""
    for column, (_old, new) in (event.diff or {}).items():
        if column in copy.values:
            copy.values[column] = new
