"""Signed, scoped tokens: who a client is and which events it may read (docs/reference.md, "serve",
Security). ``tokens`` mints and verifies HS256 JWTs; ``scope`` decides per event."""

from pgwatch_cli.auth.scope import Scope
from pgwatch_cli.auth.secret import load_secret
from pgwatch_cli.auth.tokens import InvalidToken, TokenExpired, mint, verify

__all__ = ["InvalidToken", "Scope", "TokenExpired", "load_secret", "mint", "verify"]
