"""The .sql files shipped with the package: whole scripts and named queries.

``queries.sql`` and ``presence.sql`` hold blocks introduced by ``-- name: query_name`` lines, so
the SQL stays readable (and reviewable by a DBA) instead of living in Python strings.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _sql_dir() -> Path:
    packaged = Path(str(resources.files("pgwatch_cli"))) / "sql"
    if packaged.is_dir():
        return packaged
    # Editable installs and source checkouts read the repository's top-level sql/.
    return Path(__file__).resolve().parents[2] / "sql"


@functools.cache
def script(name: str) -> str:
    """The whole text of ``sql/<name>.sql``."""
    return (_sql_dir() / f"{name}.sql").read_text(encoding="utf-8")


@functools.cache
def named_queries(name: str) -> dict[str, str]:
    """The named queries of ``sql/<name>.sql``: each block after a ``-- name: query_name``
    line, by that name."""
    parts = _NAME_LINE.split(script(name))
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def queries() -> dict[str, str]:
    """All named queries of ``sql/queries.sql``."""
    return named_queries("queries")


def query(name: str) -> str:
    return queries()[name]


_MIGRATION_FILE = re.compile(r"(\d{3})_\w+\.sql")


@functools.cache
def migrations() -> tuple[tuple[int, str, str], ...]:
    """``sql/migrations/NNN_what.sql`` as (number, file name, text), in order."""
    found = []
    for path in sorted((_sql_dir() / "migrations").iterdir()):
        matched = _MIGRATION_FILE.fullmatch(path.name)
        if matched:
            found.append((int(matched.group(1)), path.name, path.read_text(encoding="utf-8")))
    numbers = [number for number, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"sql/migrations must be numbered 1..n without gaps, found {numbers}")
    return tuple(found)
