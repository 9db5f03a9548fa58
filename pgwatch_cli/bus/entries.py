"""One stream entry: a batch of change events as the publisher read them from the log.

The entry id is ``<seq of its last event>-0``, so ids grow with seq, a replica's cursor seq is
also its stream cursor, and Redis itself refuses a batch that is not newer than the last one
(two publishers at once cannot duplicate a batch). ``prev`` is the publisher's cursor before
the batch: a reader whose seq is older than ``prev`` missed something and reads the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgwatch_cli.stream.events import ChangeEvent


@dataclass(frozen=True)
class Batch:
    log_id: str  # "" for a log without an id (the earliest installs)
    prev: int
    wires: tuple[str, ...]  # each event's wire JSON, one line each

    def fields(self) -> dict[Any, Any]:  # redis-py's field types are invariant
        return {"log_id": self.log_id, "prev": str(self.prev), "events": "\n".join(self.wires)}


def of_events(log_id: str | None, prev: int, events: list[ChangeEvent]) -> Batch:
    return Batch(log_id or "", prev, tuple(event.to_wire() for event in events))


def entry_id(seq: int) -> str:
    return f"{seq}-0"


def seq_of(entry: str | bytes) -> int:
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.partition("-")[0])


def decode(fields: dict[bytes, bytes]) -> Batch:
    """An entry's fields; ValueError when they are not a batch."""
    try:
        log_id = fields[b"log_id"].decode()
        prev = int(fields[b"prev"])
        events = fields[b"events"].decode()
    except (KeyError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a bookwatch batch ({exc})") from None
    return Batch(log_id, prev, tuple(line for line in events.split("\n") if line))
