"""Rich output helpers, kept apart from command logic: notes and errors go to stderr."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

stderr = Console(stderr=True, highlight=False, soft_wrap=True)
# Piped output is read by people in pagers and logs: do not squeeze tables to 80 columns.
stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def note(message: str) -> None:
    """A one-line progress or context note on stderr (never on stdout, which may be piped)."""
    stderr.print(f"[dim]bookwatch:[/dim] {escape(message)}")


def warn(message: str) -> None:
    stderr.print(f"[yellow]bookwatch:[/yellow] {escape(message)}")


def error(message: str, hint: str | None = None) -> None:
    stderr.print(f"[bold red]Error:[/bold red] {escape(message)}")
    if hint:
        stderr.print(f"[dim]Hint: {escape(hint)}[/dim]")
