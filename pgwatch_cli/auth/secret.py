"""The signing secret: from ``--token-secret-file PATH`` or ``$BOOKWATCH_TOKEN_SECRET``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pgwatch_cli.errors import UsageProblem

ENV_VAR = "BOOKWATCH_TOKEN_SECRET"
# RFC 7518 3.2: an HS256 key must be at least as long as the hash output (256 bits).
MIN_SECRET_BYTES = 32
_MAKE_ONE = "Make one with: head -c 48 /dev/urandom | base64 > secret && chmod 600 secret"


def load_secret(path: str | None, env_value: str | None = None) -> bytes:
    """The secret from ``path`` when given, else from the environment value; refuses a
    missing, short or world-readable one (UsageProblem, exit 2)."""
    if path is not None:
        return _from_file(Path(path))
    value = env_value if env_value is not None else os.environ.get(ENV_VAR)
    if value is None:
        raise UsageProblem(
            f"No token secret: give --token-secret-file PATH or set ${ENV_VAR}.", hint=_MAKE_ONE)
    return _checked(value.strip().encode(), f"${ENV_VAR}")


def _from_file(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageProblem(f"Token secret file {path} does not exist.", hint=_MAKE_ONE) from None
    except IsADirectoryError:
        raise UsageProblem(f"Token secret file {path} is a directory.") from None
    except OSError as exc:
        raise UsageProblem(f"Cannot read token secret file {path}: {exc.strerror}.") from None
    if not stat.S_ISREG(mode):
        raise UsageProblem(f"Token secret file {path} is not a regular file.")
    if mode & stat.S_IROTH:
        # Whoever reads the secret can mint a token for any tenant.
        raise UsageProblem(f"Token secret file {path} is readable by every user.",
                           hint=f"Run: chmod o-r {path}")
    return _checked(data.strip(), f"token secret file {path}")


def _checked(secret: bytes, where: str) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise UsageProblem(
            f"The {where} holds {len(secret)} bytes; HS256 needs at least {MIN_SECRET_BYTES}.",
            hint=_MAKE_ONE)
    return secret
