"""Domain errors. Each class's docstring is its default message; ``exit_code`` is what the CLI
returns for it (docs/reference.md, "Exit codes"); ``hint`` is an optional second line for the
user."""

from __future__ import annotations

from pgwatch_cli.text import first_line


class BookwatchError(Exception):
    """bookwatch failed."""

    exit_code = 1

    def __init__(
        self, message: str | None = None, *, hint: str | None = None, suggest: str | None = None
    ) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.hint = hint
        # A bookwatch command line that fixes it, without server options: the CLI adds the
        # ones that reach the same server (``--dsn …``) when it prints it.
        self.suggest = suggest
        super().__init__(self.message)


class UsageProblem(BookwatchError):
    """Invalid usage."""

    exit_code = 2


class DatabaseUnreachable(BookwatchError):
    """Could not connect to PostgreSQL."""

    def __init__(
        self, message: str | None = None, *, hint: str | None = None, reason: str = ""
    ) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason  # libpq's words for the cause, to pick a hint by


class UnsupportedDatabase(BookwatchError):
    """This database cannot carry bookwatch's events."""


class EmbeddedServerFailed(BookwatchError):
    """The embedded PostgreSQL server could not be started."""


class MissingTable(BookwatchError):
    """A table does not exist."""


class UnsupportedTable(BookwatchError):
    """A table cannot be watched."""


class DatabaseFailed(BookwatchError):
    """A database statement failed."""


class NotInstalled(BookwatchError):
    """bookwatch is not installed in this database."""


def database_failure(exc: Exception) -> DatabaseFailed:
    """A psycopg error as one line: PostgreSQL's primary message, never the connection string."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or first_line(str(exc)) or type(exc).__name__
    hint = getattr(diag, "message_hint", None)
    if getattr(diag, "sqlstate", None) == "55P03":  # lock_not_available, from our lock_timeout
        hint = "Another session holds a lock on that table (an open transaction?); retry later."
    return DatabaseFailed(f"Database error: {primary}", hint=hint)


class BenchmarkFailed(BookwatchError):
    """The benchmark could not complete."""
