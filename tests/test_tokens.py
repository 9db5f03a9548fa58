"""Minting and verifying scoped tokens, and the per-event check (no database needed)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from pgwatch_cli.auth import InvalidToken, Scope, TokenExpired, mint, verify
from pgwatch_cli.auth.tokens import parse_ttl
from pgwatch_cli.errors import UsageProblem
from pgwatch_cli.stream.events import parse

SECRET = b"unit-test-secret-0123456789abcdefgh"


def event(table: str = "bookings", row: Any = 5, tenant: Any = None, **more: Any) -> Any:
    body = {"v": 1, "seq": 1, "table": table, "schema": "public", "action": "UPDATE",
            "id": row, "pk": {"id": row}, "actor": "x", "changed": ["a"], "diff": None,
            "truncated": False, "txid": 1, "timestamp": "2026-12-01T00:00:00+00:00", **more}
    if tenant is not None:
        body["tenant"] = tenant
    return parse(json.dumps(body))


def test_minted_token_round_trips_to_its_scope() -> None:
    scope = verify(mint(SECRET, sub="Anna", tables=["bookings", "sales.rooms"], ids=[5, "x"],
                        tenant=7, ttl_s=3600), SECRET)
    assert scope.sub == "Anna" and scope.tenant == "7" and scope.ids == {"5", "x"}
    assert scope.tables == {"bookings", "sales.rooms"}
    assert time.time() + 3590 < scope.expires_at <= time.time() + 3601


def test_allows_checks_table_row_and_tenant() -> None:
    seven = verify(mint(SECRET, sub="A", tables=["bookings"], tenant=7, ttl_s=60), SECRET)
    assert seven.allows(event(tenant=7))
    assert seven.allows(event(tenant="7"))  # JSON text or number: the same tenant
    assert not seven.allows(event(tenant=8))
    assert not seven.allows(event(tenant=None))  # a row without a tenant is nobody's
    assert not seven.allows(event(tenant=[7]))
    assert not seven.allows(event(table="rooms", tenant=7))
    qualified = verify(mint(SECRET, sub="A", tables=["public.bookings"], ids=[5], ttl_s=60),
                       SECRET)
    assert qualified.allows(event(row=5, tenant=8))
    assert not qualified.allows(event(row=6))
    every = verify(mint(SECRET, sub="A", tables=["*"], ttl_s=60), SECRET)
    assert every.unrestricted and every.allows(event(table="anything", tenant=9))
    assert not seven.unrestricted


def test_allows_presence_checks_table_and_row() -> None:
    rows = verify(mint(SECRET, sub="A", tables=["bookings"], ids=[5], ttl_s=60), SECRET)
    assert rows.allows_presence("bookings:5")
    assert not rows.allows_presence("bookings:6")
    assert not rows.allows_presence("rooms:5")


def _unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


def _claims(**more: Any) -> dict[str, Any]:
    return {"sub": "Anna", "tables": ["bookings"], "exp": int(time.time()) + 600, **more}


@pytest.mark.parametrize(("token", "reason"), [
    (lambda: _unsigned(_claims(), {"alg": "none", "typ": "JWT"}), "not signed with HS256"),
    (lambda: _unsigned(_claims(), {"alg": "None"}), "not signed with HS256"),
    (lambda: _unsigned(_claims(), {"alg": "HS256"}), "signature does not match"),  # none
    (lambda: jwt.encode(_claims(), SECRET + SECRET, algorithm="HS512"), "not signed with HS256"),
    (lambda: jwt.encode(_claims(), b"x" * 40, algorithm="HS256"), "signature does not match"),
    (lambda: jwt.encode({"sub": "A", "tables": ["b"]}, SECRET, algorithm="HS256"), "'exp'"),
    (lambda: jwt.encode({"tables": ["b"], "exp": 2**40}, SECRET, algorithm="HS256"), "'sub'"),
    (lambda: jwt.encode(_claims(tables=[]), SECRET, algorithm="HS256"), "at least one table"),
    (lambda: jwt.encode(_claims(tables="bookings"), SECRET, algorithm="HS256"), "'tables'"),
    (lambda: jwt.encode(_claims(ids=5), SECRET, algorithm="HS256"), "'ids'"),
    (lambda: jwt.encode(_claims(tenant={"a": 1}), SECRET, algorithm="HS256"), "'tenant'"),
    (lambda: jwt.encode(_claims(sub="A\u202eB"), SECRET, algorithm="HS256"), "control"),
    (lambda: jwt.encode(_claims(sub=True), SECRET, algorithm="HS256"), "Subject"),
    (lambda: "a.b", "not valid"),
])
def test_bad_tokens_are_refused_with_the_reason(token: Any, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason) as refused:
        verify(token(), SECRET)
    assert not isinstance(refused.value, TokenExpired)


def test_an_expired_token_is_refused_as_expired() -> None:
    old = mint(SECRET, sub="Anna", tables=["bookings"], ttl_s=60, now=time.time() - 120)
    with pytest.raises(TokenExpired):
        verify(old, SECRET)


def test_mint_refuses_what_verify_would() -> None:
    with pytest.raises(InvalidToken, match="at least one table"):
        mint(SECRET, sub="Anna", tables=[], ttl_s=60)


def test_scope_is_compared_by_identity_and_hashable() -> None:
    scope = Scope(sub="a", tables=None, ids=None, tenant=None, expires_at=0)
    assert {scope: 1}[scope] == 1


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600),
                                               ("7d", 604800), (" 2H ", 7200)])
def test_ttl_takes_seconds_minutes_hours_days(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["0s", "1", "1w", "-1h", "1.5h", "", "400d", "1h30m"])
def test_bad_ttl_is_a_usage_problem(text: str) -> None:
    with pytest.raises(UsageProblem, match="--ttl wants"):
        parse_ttl(text)
