"""What ``bookwatch status`` reports: triggers, the change log, the relay slot, and warnings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgwatch_cli.capture import migrations, prune, slot, sqlfiles
from pgwatch_cli.capture.config import Mode
from pgwatch_cli.capture.triggers import InstalledTrigger, installed_triggers
from pgwatch_cli.scratch import Orphan, find_orphans

SLOT_WARN_BYTES = 1 << 30
WAITING_COUNT_LIMIT = 100_000  # decoding more than this to count is not worth a status call


@dataclass
class LogState:
    log_id: str | None
    rows: int
    size_bytes: int
    min_seq: int | None
    max_seq: int | None
    oldest_age_s: float | None
    retention: str | None

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class RelayState:
    slot: str
    exists: bool
    active: bool = False
    pid: int | None = None
    retained_wal_bytes: int | None = None
    unconfirmed_wal_bytes: int | None = None
    events_waiting: int | None = None
    # How events_waiting was found: "counted" (decoded without consuming, no relay holds
    # the slot), "at least" (the count stopped at WAITING_COUNT_LIMIT), or "unknown" (a relay
    # holds the slot; unconfirmed_wal_bytes then says how far behind it is).
    events_waiting_method: str = "unknown"

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class Status:
    schema_version: int | None
    known_schema_version: int
    triggers: list[InstalledTrigger]
    log: LogState | None
    relay: RelayState | None
    queue_usage: float
    orphans: list[Orphan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "known_schema_version": self.known_schema_version,
            "tables": [trigger.as_json() for trigger in self.triggers],
            "change_log": None if self.log is None else self.log.as_json(),
            "relay": None if self.relay is None else self.relay.as_json(),
            "notification_queue_usage": self.queue_usage,
            "orphans": [
                {"schema": o.schema, "command": o.command, "triggers": o.triggers}
                for o in self.orphans
            ],
            "warnings": self.warnings,
        }


def status(conn: psycopg.Connection[Any]) -> Status:
    version = migrations.installed_version(conn)
    known = migrations.current_version()
    orphans = find_orphans(conn)
    # A killed simulate/bench run's scratch tables are not the user's: named apart, below.
    left_behind = {orphan.schema for orphan in orphans}
    found = [t for t in installed_triggers(conn) if t.table.schema not in left_behind]
    log = _log_state(conn) if version is not None and version >= 1 else None
    relay = _relay_state(conn, found)
    usage_row = conn.execute(sqlfiles.query("notification_queue_usage")).fetchone()
    current = Status(
        schema_version=version, known_schema_version=known, triggers=found, log=log,
        relay=relay, queue_usage=float(usage_row[0]) if usage_row else 0.0, orphans=orphans,
    )
    current.warnings = _warnings(current)
    return current


def _log_state(conn: psycopg.Connection[Any]) -> LogState:
    rows, low, high, size, age = conn.execute(sqlfiles.query("log_summary")).fetchone() or (
        0, None, None, 0, None)
    log_id = conn.execute(sqlfiles.query("meta_value"), {"key": "log_id"}).fetchone()
    return LogState(
        log_id=str(log_id[0]) if log_id else None, rows=int(rows), size_bytes=int(size),
        min_seq=low, max_seq=high, oldest_age_s=age, retention=prune.retention(conn),
    )


def _relay_state(
    conn: psycopg.Connection[Any], found: list[InstalledTrigger]
) -> RelayState | None:
    name = slot.slot_name(conn)
    wal_tables = any(trigger.config.mode is Mode.WAL for trigger in found)
    row = conn.execute(sqlfiles.query("slot_state"), {"slot": name}).fetchone()
    if row is None:
        return RelayState(name, exists=False) if wal_tables else None
    active, pid, retained, unconfirmed = row
    state = RelayState(name, exists=True, active=bool(active), pid=pid,
                       retained_wal_bytes=retained, unconfirmed_wal_bytes=unconfirmed)
    if not active:
        waiting = slot.waiting_events(conn, name, WAITING_COUNT_LIMIT)
        if waiting is not None:
            state.events_waiting = waiting
            state.events_waiting_method = (
                "at least" if waiting >= WAITING_COUNT_LIMIT else "counted")
    return state


def _warnings(current: Status) -> list[str]:
    warnings = [
        f"{orphan.describe()}; the next 'bookwatch {orphan.command}' removes it, or run: "
        f"{orphan.removal}"
        for orphan in current.orphans
    ]
    if current.schema_version is not None:
        if current.schema_version < current.known_schema_version:
            warnings.append(
                f"schema version {current.schema_version} is older than this bookwatch's "
                f"{current.known_schema_version}: run bookwatch install-triggers to upgrade")
        elif current.schema_version > current.known_schema_version:
            warnings.append(
                f"schema version {current.schema_version} is newer than this bookwatch knows "
                f"({current.known_schema_version}): upgrade bookwatch")
    relay = current.relay
    if relay is not None:
        if not relay.exists:
            warnings.append(f"tables are captured in wal mode but slot {relay.slot} is missing: "
                            "run bookwatch install-triggers")
        elif not relay.active and (relay.events_waiting or 0) > 0:
            warnings.append(f"{relay.events_waiting} events wait in slot {relay.slot} and no "
                            "relay runs: start bookwatch relay (or tail/serve)")
        if (relay.retained_wal_bytes or 0) > SLOT_WARN_BYTES:
            warnings.append(f"slot {relay.slot} retains {relay.retained_wal_bytes} bytes of WAL "
                            "(over 1 GB): is a relay running and keeping up?")
    return warnings
