"""Which PostgreSQL to talk to (docs/reference.md, "Connecting"), and how to name it without
its password."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pgwatch_cli.errors import UsageProblem

LIBPQ_SELECTORS = ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")
MASK = "****"


class DsnSource(StrEnum):
    OPTION = "--dsn"
    BOOKWATCH_DSN = "BOOKWATCH_DSN"
    DATABASE_URL = "DATABASE_URL"
    LIBPQ = "libpq environment"
    EMBEDDED = "embedded"


@dataclass(frozen=True)
class DsnChoice:
    """The connection string to use (empty: libpq defaults or embedded) and where it came from."""

    dsn: str
    source: DsnSource
    forced: bool = False  # --embedded was given

    @property
    def embedded(self) -> bool:
        return self.source is DsnSource.EMBEDDED

    def same_server_args(self) -> str:
        """Options that make another bookwatch command reach this same server, for hints:
        the masked DSN when it came from --dsn, nothing when the environment carries it."""
        if self.source is DsnSource.OPTION:
            return f" --dsn {shlex.quote(mask(self.dsn))}"
        if self.forced:
            return " --embedded"
        return ""

    def where(self, environ: Mapping[str, str] | None = None) -> str:
        """Where the connection settings came from, to name in a hint."""
        env = os.environ if environ is None else environ
        if self.source is DsnSource.LIBPQ:
            given = [f"{name}={env[name]}" for name in LIBPQ_SELECTORS if env.get(name)]
            return "the libpq environment (" + ", ".join(given) + ")"
        if self.source is DsnSource.OPTION:
            return f"--dsn {mask(self.dsn)}"
        if self.embedded:
            return "the embedded server"
        return f"${self.source.value}"


def choose_dsn(
    option: str | None, *, force_embedded: bool = False, environ: Mapping[str, str] | None = None
) -> DsnChoice:
    env = os.environ if environ is None else environ
    if force_embedded:
        if option:
            raise UsageProblem("--dsn and --embedded exclude each other.")
        return DsnChoice(dsn="", source=DsnSource.EMBEDDED, forced=True)
    if option:
        return DsnChoice(dsn=_checked(option, "--dsn"), source=DsnSource.OPTION)
    for name, source in (("BOOKWATCH_DSN", DsnSource.BOOKWATCH_DSN),
                         ("DATABASE_URL", DsnSource.DATABASE_URL)):
        if env.get(name):
            return DsnChoice(dsn=_checked(env[name], name), source=source)
    if any(env.get(name) for name in LIBPQ_SELECTORS):
        return DsnChoice(dsn="", source=DsnSource.LIBPQ)
    return DsnChoice(dsn="", source=DsnSource.EMBEDDED)


_URI = re.compile(r"^(?P<scheme>postgres(?:ql)?://)(?P<rest>.*)$", re.DOTALL)
# A URI's user info ends at the first "@"; a password holding "@", "/" or "?" unencoded makes
# libpq read part of it as the host (and print it in its errors).
_AMBIGUOUS_USERINFO = re.compile(r"[@/?]")


def _checked(dsn: str, origin: str) -> str:
    import psycopg.conninfo

    uri = _URI.match(dsn)
    if uri:
        # Up to the last "@": a password may hold "?" too. (An "@" in a query parameter makes
        # this refuse a valid URI with a port; percent-encoding it as %40 then helps.)
        userinfo = uri["rest"].rpartition("@")[0]
        if ":" in userinfo and _AMBIGUOUS_USERINFO.search(userinfo.split(":", 1)[1]):
            raise UsageProblem(
                f"{origin}: the password in this URI holds '@', '/' or '?'; "
                "libpq would read part of it as the host.",
                hint="Percent-encode those characters in the password (@ %40, / %2F, ? %3F), "
                "or use the key=value form: \"host=... user=... password='...'\".",
            )
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # libpq's message may quote the string, password included: say only where it came from.
        raise UsageProblem(
            f"{origin} is not a valid PostgreSQL connection string.",
            hint="Use a URI like postgresql://user@host:5432/dbname or 'host=... dbname=...'.",
        ) from None
    return dsn


_URI_PASSWORD = re.compile(r"^(postgres(?:ql)?://[^@/?#:]*:)(.*)(@)", re.DOTALL)
_KEYWORD_PASSWORD = re.compile(
    r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]*)", re.IGNORECASE
)


def mask(dsn: str) -> str:
    """The connection string as written, with any password replaced by ``****``: in the URI's
    user info (up to its last "@", so "@", "/", ":" or "#" in it never leak), and as a
    ``password=`` keyword or URI parameter (quoted or not)."""
    masked = _URI_PASSWORD.sub(lambda m: m[1] + MASK + m[3], dsn, count=1)
    return _KEYWORD_PASSWORD.sub(lambda m: m[1] + MASK, masked)


def describe(dsn: str) -> str:
    """A human name for a server: ``user@host:port/dbname``, never the password."""
    import psycopg.conninfo

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
    import platformdirs

    return Path(platformdirs.user_data_dir("bookwatch", appauthor=False))
