"""``bookwatch token`` and ``serve --token-secret-file`` on the command line: the token alone on
stdout, every bad input one ``Error:`` line and exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest

from pgwatch_cli.auth import verify
from tests.fix_cli import run_bookwatch

SECRET = "cli-test-secret-0123456789abcdefghijkl"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def error_line(stderr: str) -> str:
    [line] = [line for line in stderr.splitlines() if line.startswith("Error:")]
    return line


def test_token_prints_only_the_token_with_the_claims_asked_for(
    bookwatch: Any, secret_file: Path
) -> None:
    result = bookwatch("token", "--sub", "Anna", "--table", "bookings", "--tenant", "7",
                       "--id", "5", "--id", "6", "--ttl", "15m",
                       "--token-secret-file", str(secret_file))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    printed = result.stdout
    assert printed.count("\n") == 1 and printed.count(".") == 2
    scope = verify(printed.strip(), SECRET.encode())
    assert (scope.sub, scope.tables, scope.ids, scope.tenant) == (
        "Anna", {"bookings"}, {"5", "6"}, "7")
    claims = jwt.decode(printed.strip(), SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 900


def test_token_takes_the_secret_from_the_environment(
    bookwatch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOKWATCH_TOKEN_SECRET", SECRET)
    result = bookwatch("token", "--sub", "Ben", "--table", "*")
    assert result.exit_code == 0, result.stderr
    assert verify(result.stdout.strip(), SECRET.encode()).unrestricted


@pytest.mark.parametrize(("args", "message"), [
    (["--ttl", "1w"], "Error: --ttl wants a duration like 90s, 15m, 1h or 7d"),
    (["--ttl", "0s"], "Error: --ttl wants"),
    (["--sub", "  "], "Error: Cannot mint that token: the token's 'sub' claim must be 1 to"),
    (["--sub", "A\x1bB"], "must not contain control characters"),
    (["--table", ""], "Error: Cannot mint that token: the token's 'tables' claim"),
])
def test_token_refuses_bad_claims(bookwatch: Any, secret_file: Path, args: list[str],
                                  message: str) -> None:
    base = {"--sub": "Anna", "--table": "bookings"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    flat = [part for key, value in {**base, **given}.items() for part in (key, value)]
    result = bookwatch("token", *flat, "--token-secret-file", str(secret_file))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in error_line(result.stderr)


def test_token_refuses_missing_short_or_exposed_secrets(
    bookwatch: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BOOKWATCH_TOKEN_SECRET", raising=False)
    mint = ("token", "--sub", "Anna", "--table", "bookings")

    def refused(*extra: str) -> str:
        result = bookwatch(*mint, *extra)
        assert result.exit_code == 2 and result.stdout == ""
        return error_line(result.stderr)

    assert "No token secret" in refused()
    assert "does not exist" in refused("--token-secret-file", str(tmp_path / "nope"))
    assert "is a directory" in refused("--token-secret-file", str(tmp_path))
    short = tmp_path / "short"
    short.write_text("tiny")
    short.chmod(0o600)
    assert "holds 4 bytes; HS256 needs at least 32" in refused("--token-secret-file", str(short))
    exposed = tmp_path / "exposed"
    exposed.write_text(SECRET)
    exposed.chmod(0o644)
    assert "readable by every user" in refused("--token-secret-file", str(exposed))
    monkeypatch.setenv("BOOKWATCH_TOKEN_SECRET", "short")
    assert "$BOOKWATCH_TOKEN_SECRET holds 5 bytes" in refused()


def test_serve_refuses_a_bad_secret_before_serving(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("tiny")
    short.chmod(0o600)
    env = {"BOOKWATCH_DSN": "host=127.0.0.1 port=1 user=nobody", "BOOKWATCH_TOKEN": None,
           "BOOKWATCH_TOKEN_SECRET": None}
    result = run_bookwatch("serve", "--token-secret-file", str(short), env=env, timeout=60)
    assert result.returncode == 2
    assert "HS256 needs at least 32" in error_line(result.stderr)


def test_signed_tokens_count_as_protection_for_a_public_address(tmp_path: Path) -> None:
    """--host 0.0.0.0 with only a secret is not refused as unprotected (it then fails later,
    on the unreachable database, with exit 1)."""
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    env = {"BOOKWATCH_DSN": "host=127.0.0.1 port=1 user=nobody connect_timeout=2",
           "BOOKWATCH_TOKEN": None, "BOOKWATCH_TOKEN_SECRET": None}
    unprotected = run_bookwatch("serve", "--host", "0.0.0.0", "--port", "0", env=env)
    assert unprotected.returncode == 2 and "without a token" in unprotected.stderr
    signed = run_bookwatch("serve", "--host", "0.0.0.0", "--port", "0",
                           "--token-secret-file", str(secret), env=env)
    assert signed.returncode == 1, signed.stderr
    assert "without a token" not in signed.stderr
