"""TableRef: a table named by the user, matched exactly and always quoted safely."""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

from pgwatch_cli.errors import UsageProblem

# PostgreSQL cuts longer identifiers to this many bytes (NAMEDATALEN - 1), silently but for a
# NOTICE: a longer name would quietly mean another table.
MAX_NAME_BYTES = 63
# bookwatch's own schema: capturing its tables would log the log (a feedback loop).
OWN_SCHEMA = "bookwatch"
_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")
_QUOTED_PART = re.compile(r'"((?:[^"]|"")*)"')


def quote_if_needed(name: str) -> str:
    return name if _PLAIN_NAME.fullmatch(name) else '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, order=True)
class TableRef:
    schema: str
    name: str

    @classmethod
    def parse(cls, value: str, default_schema: str = "public") -> TableRef:
        """``name``, ``schema.name``, or SQL-quoted parts (``"my.schema"."Buchungen 2026"``).

        Unquoted names are taken literally (no case folding), so ``Bookings`` means the table
        created as ``"Bookings"``. A name that is not a table is reported as missing later;
        nothing here is ever pasted into SQL.
        """
        if "\0" in value:
            raise UsageProblem("A table name cannot contain a NUL byte.")
        parts = _split(value)
        if len(parts) == 1:
            schema, name = default_schema, parts[0]
        elif len(parts) == 2:
            schema, name = parts
        else:
            raise UsageProblem(f"Table name {value!r} has too many dots; quote the parts.")
        if not schema or not name:
            raise UsageProblem(f"Table name {value!r} is empty or has an empty part.")
        for part in (schema, name):
            if len(part.encode()) > MAX_NAME_BYTES:
                raise UsageProblem(
                    f"{part!r} is {len(part.encode())} bytes long; PostgreSQL names are at most "
                    f"{MAX_NAME_BYTES} and it would read it as {_truncated(part)!r}.",
                    hint="Give the name as the database has it (\\dt in psql shows it).",
                )
        if schema == OWN_SCHEMA:
            raise UsageProblem(
                f"{value!r} is one of bookwatch's own tables (schema {OWN_SCHEMA}); capturing "
                "them would log the log's own writes for ever.",
            )
        return cls(schema, name)

    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{quote_if_needed(self.schema)}.{quote_if_needed(self.name)}"


def _truncated(name: str) -> str:
    """``name`` cut to MAX_NAME_BYTES as PostgreSQL does: on a character boundary."""
    return name.encode()[:MAX_NAME_BYTES].decode(errors="ignore")


def _split(value: str) -> list[str]:
    if '"' not in value:
        return value.split(".", 1)
    parts, position = [], 0
    while position <= len(value):
        quoted = _QUOTED_PART.match(value, position)
        if quoted:
            parts.append(quoted.group(1).replace('""', '"'))
            position = quoted.end()
        else:
            end = value.find(".", position)
            end = len(value) if end == -1 else end
            parts.append(value[position:end])
            position = end
        if position < len(value) and value[position] != ".":
            raise UsageProblem(f"Cannot read table name {value!r}: text after a quoted part.")
        position += 1
    return parts
