"""Minting and verifying the signed tokens (JWT, HS256, through PyJWT)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

import jwt

from pgwatch_cli.auth.scope import ClaimProblem, Scope
from pgwatch_cli.errors import UsageProblem

ALGORITHM = "HS256"
# None: a stream ends at its token's exp, so a connection at exp must not be accepted either.
LEEWAY_S = 0


class InvalidToken(ValueError):
    """The token is not one this server signed, or lacks what a scope needs."""


class TokenExpired(InvalidToken):
    """The token's ``exp`` has passed."""


def mint(secret: bytes, *, sub: str, tables: Iterable[str], ttl_s: float,
         ids: Iterable[str | int] = (), tenant: str | int | None = None,
         now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": sub, "tables": list(tables), "iat": issued,
                              "exp": issued + max(1, round(ttl_s))}
    id_list = list(ids)
    if id_list:
        claims["ids"] = id_list
    if tenant is not None:
        claims["tenant"] = tenant
    _scope(claims)  # never mint what verify() would refuse
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(token: str, secret: bytes) -> Scope:
    """The scope a token grants; InvalidToken (TokenExpired) with the reason otherwise.

    Only HS256 is accepted: ``alg: none`` and every other algorithm (an RS256 token whose
    "public key" is our secret) are refused before the signature is looked at."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": ["exp", "sub"]}, leeway=LEEWAY_S)
    except jwt.ExpiredSignatureError:
        raise TokenExpired("the token has expired") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidToken(f"the token has no {exc.claim!r} claim") from None
    except jwt.InvalidAlgorithmError:
        raise InvalidToken(f"the token is not signed with {ALGORITHM}") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("the token's signature does not match") from None
    except jwt.InvalidTokenError as exc:
        raise InvalidToken(f"the token is not valid: {exc}") from None
    return _scope(claims)


def _scope(claims: dict[str, Any]) -> Scope:
    try:
        return Scope.from_claims(claims)
    except ClaimProblem as exc:
        raise InvalidToken(str(exc)) from None


_TTL = re.compile(r"(\d{1,9})([smhd])")
_TTL_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL_S = 366 * 86400


def parse_ttl(text: str) -> int:
    """``90s``, ``15m``, ``1h``, ``7d`` → seconds; UsageProblem for anything else."""
    matched = _TTL.fullmatch(text.strip().lower())
    seconds = int(matched.group(1)) * _TTL_UNIT_S[matched.group(2)] if matched else 0
    if not 0 < seconds <= MAX_TTL_S:
        raise UsageProblem(
            f"--ttl wants a duration like 90s, 15m, 1h or 7d (at most 366d); got {text!r}.")
    return seconds
