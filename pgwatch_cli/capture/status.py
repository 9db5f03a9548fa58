"""What ``bookwatch status`` reports: triggers, the change log, the relay slot, and warnings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgwatch_cli.capture import migrations, prune, slot, sqlfiles
from pgwatch_cli.capture.config import Mode
from pgwatch_cli.capture.slot_limits import keep_size_warning, wal_keep_size
from pgwatch_cli.capture.triggers import InstalledTrigger, installed_triggers
from pgwatch_cli.scratch import Orphan, find_orphans
from pgwatch_cli.stream.events import parse_gap

SLOT_WARN_BYTES = 256 << 20
# Events waiting with no relay for this long is a warning (a relay restarting is not).
NO_RELAY_WARN_S = 300.0
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
    wal_status: str | None = None  # reserved, extended, unreserved, or lost (invalidated)
    last_relayed_s: float | None = None  # since a relay last appended; None: never
    max_slot_wal_keep_size: int | None = None  # bytes; -1 unlimited

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class LastGap:
    seq: int
    logged_at: str
    description: str

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
    last_gap: LastGap | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "known_schema_version": self.known_schema_version,
            "tables": [trigger.as_json() for trigger in self.triggers],
            "change_log": None if self.log is None else self.log.as_json(),
            "relay": None if self.relay is None else self.relay.as_json(),
            "notification_queue_usage": self.queue_usage,
            "last_gap": None if self.last_gap is None else self.last_gap.as_json(),
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
        last_gap=_last_gap(conn) if log is not None else None,
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
    active, pid, retained, unconfirmed, wal_status = row
    state = RelayState(name, exists=True, active=bool(active), pid=pid,
                       retained_wal_bytes=retained, unconfirmed_wal_bytes=unconfirmed,
                       wal_status=wal_status, last_relayed_s=_last_relayed(conn, name),
                       max_slot_wal_keep_size=wal_keep_size(conn))
    if not active and wal_status != "lost":
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
        warnings.extend(_slot_warnings(relay))
    if current.last_gap is not None:
        gap = current.last_gap
        warnings.append(f"{gap.description}, logged {gap.logged_at}: keep a relay running "
                        "(bookwatch relay) and cap what a slot may keep (max_slot_wal_keep_size) "
                        "so that it is not lost again")
    return warnings


def _slot_warnings(relay: RelayState) -> list[str]:
    if not relay.exists:
        return [f"tables are captured in wal mode but slot {relay.slot} is missing: "
                "run bookwatch install-triggers"]
    warnings = []
    if relay.wal_status == "lost":
        warnings.append(
            f"slot {relay.slot} was invalidated (it held more WAL than max_slot_wal_keep_size "
            "allows): the changes it held are lost; start bookwatch relay to recreate it "
            "(it logs a GAP), or remove-triggers --force and install-triggers --mode wal")
    no_relay_for = relay.last_relayed_s
    if (not relay.active and (relay.events_waiting or 0) > 0
            and (no_relay_for is None or no_relay_for >= NO_RELAY_WARN_S)):
        since = "" if no_relay_for is None else f" for {_duration(no_relay_for)}"
        warnings.append(f"{relay.events_waiting} events wait in slot {relay.slot} and no "
                        f"relay runs{since}: start bookwatch relay (or tail/serve)")
    if (relay.retained_wal_bytes or 0) > SLOT_WARN_BYTES:
        warnings.append(
            f"slot {relay.slot} retains {human_bytes(relay.retained_wal_bytes or 0)} of WAL "
            f"(over {human_bytes(SLOT_WARN_BYTES)}), which PostgreSQL cannot remove: start "
            "bookwatch relay (or tail/serve) if none runs" + (
                ", or see why it falls behind" if relay.active else ""))
    if relay.max_slot_wal_keep_size == -1:
        warnings.append(keep_size_warning())
    return warnings


def _last_relayed(conn: psycopg.Connection[Any], name: str) -> float | None:
    try:
        with conn.transaction():
            row = conn.execute(sqlfiles.query("last_relayed"), {"slot": name}).fetchone()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return None  # no log (yet): nothing was ever relayed
    return None if row is None else float(row[0])


def _last_gap(conn: psycopg.Connection[Any]) -> LastGap | None:
    row = conn.execute(sqlfiles.query("last_gap")).fetchone()
    if row is None:
        return None
    seq, payload, logged_at = row
    gap = parse_gap(int(seq), str(payload), None)
    return None if gap is None else LastGap(int(seq), str(logged_at), gap.describe())


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
