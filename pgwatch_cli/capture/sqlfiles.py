"""The .sql files shipped with the package: whole scripts and named queries.

``queries.sql`` holds blocks introduced by ``-- name: query_name`` lines, so the SQL stays
readable (and reviewable by a DBA) instead of living in Python strings.
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
def queries() -> dict[str, str]:
    """All named queries of ``sql/queries.sql``."""
    parts = _NAME_LINE.split(script("queries"))
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def query(name: str) -> str:
    return queries()[name]
