"""ChangeEvent: the wire format v1 (docs/reference.md, "Event wire format"), parsed and
serialized."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

Action = Literal["INSERT", "UPDATE", "DELETE", "TRUNCATE"]
# The actions ``tail --action`` and serve's ``action`` filter on.
ACTIONS: tuple[Action, ...] = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")
JsonValue = Any


class InvalidPayload(ValueError):
    """A NOTIFY payload or log row that is not a valid v1 event."""


class ChangeEvent(BaseModel):
    # Unknown keys are kept and passed on: consumers must ignore them, relays must not drop them.
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    v: Literal[1]
    seq: int | None
    table: str
    # "schema" would shadow a BaseModel attribute, hence the alias.
    schema_name: str = Field(alias="schema")
    action: Action
    id: JsonValue = None
    pk: dict[str, JsonValue] | None
    # An UPDATE that changed the primary key also carries the key before the change.
    old_pk: dict[str, JsonValue] | None = None
    actor: str | None
    changed: list[str] | None
    diff: dict[str, tuple[JsonValue, JsonValue]] | None
    truncated: bool
    txid: int
    # Kept as sent, so re-serializing gives the same text; validated as an ISO-8601 instant.
    timestamp: str
    # The payload as the trigger wrote it: relayed verbatim, so values such as numeric 1352.00
    # or 20-digit numbers reach consumers exactly, not as rounded Python floats.
    _wire: str | None = PrivateAttr(default=None)

    @field_validator("timestamp")
    @classmethod
    def _iso_instant(cls, value: str) -> str:
        if datetime.fromisoformat(value).tzinfo is None:
            raise ValueError("timestamp needs a UTC offset")
        return value

    @property
    def committed_at(self) -> datetime:
        return datetime.fromisoformat(self.timestamp)

    @property
    def entity(self) -> str:
        """``table:id``: how presence and filters name one row (composite keys comma-joined)."""
        return f"{self.table}:{self.id_text}"

    @property
    def id_text(self) -> str:
        if self.id is not None:
            return str(self.id)
        if self.pk is None:
            return "?"
        return ",".join(str(value) for value in self.pk.values())

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copy = super().model_copy(update=update, deep=deep)
        if update:
            # The cached payload describes the original: a changed copy must serialize itself.
            copy._wire = None
        return copy

    def to_wire(self) -> str:
        """The JSON line that ``tail --json`` prints and SSE ``data:`` carries: the payload as
        received when there is one, else this model serialized."""
        if self._wire is not None:
            return self._wire
        return self.model_dump_json(by_alias=True)


def parse(payload: str | bytes) -> ChangeEvent:
    try:
        event = ChangeEvent.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        raise InvalidPayload(f"{where}: {first['msg']}") from None
    text = payload.decode() if isinstance(payload, bytes) else payload
    if "\n" not in text:  # one event per line for JSON-lines and SSE data: fields
        event._wire = text
    return event


def parse_logged(seq: int, payload: str | bytes) -> ChangeEvent:
    """A change-log row's event, numbered by the row's ``seq`` column.

    The column is the only seq anyone trusts: a payload carrying another one (a forged body
    with a duplicate ``"seq"`` key, which JSON readers resolve to the last) is renumbered and
    re-serialized, so neither the reader's cursor nor a consumer of the JSON sees the forgery.
    """
    event = parse(payload)
    if event.seq == seq:
        return event
    return event.model_copy(update={"seq": seq})


@dataclass(frozen=True)
class LogReplaced:
    """The change log was recreated (a new ``log_id``): the consumer's cursor belongs to a log
    that no longer exists. The stream goes on with the new log from its start; a consumer
    holding state derived from the old one must refetch (serve: ``event: reset``)."""

    old_log_id: str | None
    new_log_id: str | None


@dataclass(frozen=True)
class Gap(LogReplaced):
    """A logged ``GAP`` marker (docs/reference.md): the wal relay's slot was invalidated or
    recreated and the changes between ``lost_from`` and ``lost_to`` were lost. The log itself
    goes on (same ``log_id``), but like a replaced log it tells consumers holding derived state
    to refetch, which is why it is a LogReplaced: serve sends ``event: reset``, tail prints an
    error line."""

    seq: int = 0
    reason: str | None = None
    lost_from: str | None = None
    lost_to: str | None = None

    def describe(self) -> str:
        span = f"{self.lost_from or '?'} .. {self.lost_to or '?'}"
        reason = self.reason or "no reason given"
        return f"changes were lost ({span}): {reason} (GAP, seq {self.seq})"


def parse_gap(seq: int, payload: str | bytes, log_id: str | None) -> Gap | None:
    """The GAP marker a change-log row holds, numbered by the row's seq; None for any other row."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    if '"GAP"' not in text:  # cheap: every other row is a change event
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("v") != 1 or data.get("action") != "GAP":
        return None

    def member(name: str) -> str | None:
        value = data.get(name)
        return None if value is None else str(value)

    return Gap(log_id, log_id, seq, member("reason"), member("lost_from"), member("lost_to"))


# What a ChangeStream's items() and a Hub subscription's items() yield.
StreamItem = ChangeEvent | LogReplaced
