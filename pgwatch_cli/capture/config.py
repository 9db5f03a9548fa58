"""What a capture trigger does, as encoded in its arguments (see sql/capture.sql)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class Mode(enum.StrEnum):
    WAL = "wal"
    LOG = "log"
    NOTIFY = "notify"


# Mode names of schema version 1's trigger arguments.
_V1_MODES = {"durable": Mode.LOG, "volatile": Mode.NOTIFY}


@dataclass(frozen=True)
class TriggerConfig:
    channel: str
    mode: Mode
    primary_key: tuple[str, ...]
    excluded: tuple[str, ...] = ()
    # Attribute numbers of the excluded columns when installed: a renamed column stays excluded.
    excluded_attnums: tuple[int, ...] = ()
    partitioned: bool = False
    # The column whose value events carry as "tenant" (install-triggers --tenant-column).
    tenant_column: str | None = None
    # Read from a version 1 trigger: must be rewritten for the current capture function.
    legacy: bool = False

    def arguments(self) -> list[str]:
        return [
            self.channel,
            self.mode.value,
            "partitioned" if self.partitioned else "",
            str(len(self.primary_key)),
            *self.primary_key,
            str(len(self.excluded)),
            *self.excluded,
            *(str(attnum) for attnum in self.excluded_attnums),
            # Last and optional: triggers installed before it have no such argument.
            *([self.tenant_column] if self.tenant_column else []),
        ]

    @classmethod
    def from_arguments(cls, args: Sequence[str]) -> TriggerConfig:
        if args[1] in _V1_MODES:
            # v1: channel, durable|volatile, n, key..., excluded names...
            key_count = int(args[2])
            return cls(
                channel=args[0],
                mode=_V1_MODES[args[1]],
                primary_key=tuple(args[3 : 3 + key_count]),
                excluded=tuple(args[3 + key_count :]),
                legacy=True,
            )
        key_count = int(args[3])
        excluded_count = int(args[4 + key_count])
        names_start = 5 + key_count
        attnums_start = names_start + excluded_count
        tenant_at = attnums_start + excluded_count
        return cls(
            channel=args[0],
            mode=Mode(args[1]),
            partitioned=args[2] == "partitioned",
            primary_key=tuple(args[4 : 4 + key_count]),
            excluded=tuple(args[names_start : names_start + excluded_count]),
            excluded_attnums=tuple(int(attnum) for attnum in args[attnums_start:tenant_at]),
            tenant_column=args[tenant_at] if len(args) > tenant_at and args[tenant_at] else None,
        )
