"""What a user's client does when another user's change to the open booking arrives.

``refresh`` and ``merge`` are held to the same rule: a change to the very column the user is
editing (to another value than theirs) is a clash the user must decide, never something to
save over. They differ in what they do otherwise: ``refresh`` reloads the booking, ``merge``
applies the event's diff without a round trip and, when a save is rejected because the event
had not arrived yet, rebases on the current row and saves again (as the demo page does on a
409).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pgwatch_cli.commands.simulate.bookings import LOCK_COLUMNS, Copy, same
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
    Strategy.REFRESH: "on a change event, reload the booking, keep the pending edit (a change "
                      "to the same field = conflict), save",
    Strategy.MERGE: "rebase the pending edit on the event's diff (or on the row a rejected "
                    "save finds, then save again); same field = conflict",
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


def clashes(copy: Copy, now: Mapping[str, Any]) -> list[str]:
    """Pending columns that another user has set to a value other than the user's: what the
    user began editing from (``copy.origin``) is no longer there. Equal values are no clash."""
    return [
        column for column, mine in copy.pending.items()
        if column in now and not same(now[column], copy.origin.get(column))
        and not same(now[column], mine)
    ]


def react(strategy: Strategy, event: ChangeEvent, copy: Copy) -> Reaction:
    """What to do with the event. A "reload" must be followed by ``clashes(fresh, ...)``: only
    the reloaded row shows whether the user's column was changed too."""
    changed = tuple(c for c in event.changed or () if c not in LOCK_COLUMNS)
    if strategy is Strategy.BASELINE:
        raise ValueError("the baseline does not react to events")
    # Without the full diff (dropped for size, excluded columns) only a reload can tell.
    complete = (not event.truncated and event.diff is not None
                and set(event.changed or ()) <= set(event.diff))
    if complete and clashes(copy, {c: new for c, (_old, new) in (event.diff or {}).items()}):
        return Reaction("clash", changed)
    if strategy is Strategy.MERGE and complete:
        return Reaction("rebase", changed)
    return Reaction("reload", changed)


def rebase(copy: Copy, event: ChangeEvent) -> None:
    """Apply the other user's change to the open copy; the pending edit stays on top."""
    for column, (_old, new) in (event.diff or {}).items():
        if column in copy.values:
            copy.values[column] = new
