"""Which PostgreSQL to talk to (SPEC "Connecting"), and how to name it without its password."""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

import platformdirs
import psycopg.conninfo
from pydantic import BaseModel, ConfigDict

from pgwatch_cli.errors import UsageProblem

LIBPQ_SELECTORS = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")


class DsnSource(StrEnum):
    OPTION = "--dsn"
    BOOKWATCH_DSN = "BOOKWATCH_DSN"
    DATABASE_URL = "DATABASE_URL"
    LIBPQ = "libpq environment"
    EMBEDDED = "embedded"


class DsnChoice(BaseModel):
    """The connection string to use (empty: libpq defaults or embedded) and where it came from."""

    model_config = ConfigDict(frozen=True)

    dsn: str
    source: DsnSource

    @property
    def embedded(self) -> bool:
        return self.source is DsnSource.EMBEDDED


def choose_dsn(
    option: str | None, *, force_embedded: bool = False, environ: Mapping[str, str] | None = None
) -> DsnChoice:
    env = os.environ if environ is None else environ
    if force_embedded:
        if option:
            raise UsageProblem("--dsn and --embedded exclude each other.")
        return DsnChoice(dsn="", source=DsnSource.EMBEDDED)
    if option:
        return DsnChoice(dsn=_checked(option, "--dsn"), source=DsnSource.OPTION)
    for name, source in (("BOOKWATCH_DSN", DsnSource.BOOKWATCH_DSN),
                         ("DATABASE_URL", DsnSource.DATABASE_URL)):
        if env.get(name):
            return DsnChoice(dsn=_checked(env[name], name), source=source)
    if any(env.get(name) for name in LIBPQ_SELECTORS):
        return DsnChoice(dsn="", source=DsnSource.LIBPQ)
    return DsnChoice(dsn="", source=DsnSource.EMBEDDED)


def _checked(dsn: str, origin: str) -> str:
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # libpq's message may quote the string, password included: say only where it came from.
        raise UsageProblem(
            f"{origin} is not a valid PostgreSQL connection string.",
            hint="Use a URI like postgresql://user@host:5432/dbname or 'host=... dbname=...'.",
        ) from None
    return dsn


def describe(dsn: str) -> str:
    """A human name for a server: ``user@host:port/dbname``, never the password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable connection string)"
    env = os.environ
    host = str(params.get("host") or env.get("PGHOST") or "local socket")
    port = str(params.get("port") or env.get("PGPORT") or "5432")
    user = str(params.get("user") or env.get("PGUSER") or "")
    dbname = str(params.get("dbname") or env.get("PGDATABASE") or user or "")
    where = f"{host}:{port}" if not host.startswith("/") else f"{host} (socket)"
    return f"{user + '@' if user else ''}{where}/{dbname}"


def bookwatch_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("BOOKWATCH_HOME"):
        return Path(env["BOOKWATCH_HOME"]).expanduser()
    return Path(platformdirs.user_data_dir("bookwatch", appauthor=False))
