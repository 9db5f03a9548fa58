"""The relay's first stage: pgoutput frames in, changes out, each tagged with its transaction
(commit LSN, position in it, xid, commit time) and the actor its writer announced.

pgoutput (protocol 1) sends a transaction whole at its commit: BEGIN, its relations, actor
messages and rows, COMMIT. Anything else is a protocol anomaly and raises, never passes
silently. Non-transactional logical messages (anyone may emit them, outside any transaction)
are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgwatch_cli.stream import pgoutput

ACTOR_PREFIX = "bookwatch.actor"
CONFIG_PREFIX = "bookwatch.config"


class ProtocolAnomaly(pgoutput.ProtocolError):
    """Frames in an order pgoutput never sends."""


@dataclass(frozen=True, slots=True)
class Change:
    """One row change (or TRUNCATE) of a committed transaction."""

    commit_lsn: int
    position: int  # 0-based index among the transaction's changes: restarts resume here
    xid: int
    commit_micros: int
    actor: str | None
    row: pgoutput.RowChange | pgoutput.Truncate


@dataclass(slots=True)
class _Open:
    begin: pgoutput.Begin
    position: int = 0
    actor: str | None = None


class TransactionAssembler:
    """Feed it frames in stream order; it keeps the open transaction's state."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._open: _Open | None = None

    @property
    def in_transaction(self) -> bool:
        return self._open is not None

    def begin(self, frame: pgoutput.Begin) -> None:
        if self._open is not None:
            raise ProtocolAnomaly(
                f"BEGIN of transaction {frame.xid} inside transaction {self._open.begin.xid}")
        self._open = _Open(frame)

    def message(self, frame: pgoutput.Message) -> bool:
        """Take an actor message; True for a configuration change (the caller reloads)."""
        if not frame.transactional:
            return False
        if self._open is None:
            raise ProtocolAnomaly(f"transactional message {frame.prefix!r} outside a transaction")
        if frame.prefix == ACTOR_PREFIX:
            self._open.actor = frame.content.decode(self._encoding, "replace")
        return frame.prefix == CONFIG_PREFIX

    def change(self, frame: pgoutput.RowChange | pgoutput.Truncate) -> Change:
        current = self._open
        if current is None:
            raise ProtocolAnomaly(f"{_what(frame)} outside a transaction")
        change = Change(current.begin.final_lsn, current.position, current.begin.xid,
                        current.begin.commit_micros, current.actor, frame)
        current.position += 1
        return change

    def commit(self, frame: pgoutput.Commit) -> int:
        """Close the transaction; returns how many changes it had."""
        current = self._open
        if current is None:
            raise ProtocolAnomaly(f"COMMIT at {pgoutput.format_lsn(frame.commit_lsn)} "
                                  "without BEGIN")
        if current.begin.final_lsn != frame.commit_lsn:
            raise ProtocolAnomaly(
                f"COMMIT at {pgoutput.format_lsn(frame.commit_lsn)} closes the transaction "
                f"that began for {pgoutput.format_lsn(current.begin.final_lsn)}")
        self._open = None
        return current.position


def _what(frame: pgoutput.RowChange | pgoutput.Truncate) -> str:
    return frame.action if isinstance(frame, pgoutput.RowChange) else "TRUNCATE"
