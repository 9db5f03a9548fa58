"""How simulate's failures reach the CLI: as one ``Error:`` line, also when a TaskGroup wraps
them (no database needed)."""

from __future__ import annotations

from typing import Any

import pytest

from pgwatch_cli.commands.simulate import command
from pgwatch_cli.errors import DatabaseFailed
from pgwatch_cli.stream.hub import SourceEnded


@pytest.mark.parametrize(
    "failure",
    [
        SourceEnded("listener gone"),
        ExceptionGroup("users", [SourceEnded("listener gone")]),
        BaseExceptionGroup("outer", [ExceptionGroup("users", [SourceEnded("listener gone")])]),
        ExceptionGroup("users", [LookupError("booking 123 does not exist")]),
    ],
)
def test_wrapped_or_not_a_failure_becomes_one_error(
    monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    async def play(*_: Any) -> None:
        raise failure

    monkeypatch.setattr(command, "_play", play)
    with pytest.raises(DatabaseFailed):
        command._run(None, None)  # type: ignore[arg-type]


def test_a_bug_stays_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    async def play(*_: Any) -> None:
        raise ExceptionGroup("users", [ZeroDivisionError("bug")])

    monkeypatch.setattr(command, "_play", play)
    with pytest.raises(ZeroDivisionError):
        command._run(None, None)  # type: ignore[arg-type]
