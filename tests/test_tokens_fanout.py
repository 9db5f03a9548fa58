"""The fan-out with scoped streams, without a database: whatever way a stream is indexed (by its
tenant, or by its filters and checked one by one), it gets exactly the events its filters and
its token allow, in one pass with unscoped streams. Real sockets (socketpairs)."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from typing import Any

import pytest

from pgwatch_cli.auth import Scope
from pgwatch_cli.commands.serve import scopes
from pgwatch_cli.commands.serve.fanout import Client, Fanout, _index_keys
from pgwatch_cli.commands.serve.metrics import RelayCounters
from pgwatch_cli.stream.events import ChangeEvent, parse
from pgwatch_cli.stream.filters import Filters

SEQ = itertools.count(1)


def event(table: str, row: int, tenant: Any, action: str = "UPDATE",
          schema: str = "public") -> ChangeEvent:
    body = {"v": 1, "seq": next(SEQ), "table": table, "schema": schema, "action": action,
            "id": row, "pk": {"id": row}, "actor": "x", "changed": None, "diff": None,
            "truncated": False, "txid": 1, "timestamp": "2026-11-28T06:41:00+00:00"}
    if tenant is not None:
        body["tenant"] = tenant
    return parse(json.dumps(body))


def scope(tables: tuple[str, ...] | None = ("bookings",), ids: tuple[str, ...] | None = None,
          tenant: str | None = "7") -> Scope:
    return Scope(sub="x", tables=None if tables is None else frozenset(tables),
                 ids=None if ids is None else frozenset(ids), tenant=tenant,
                 expires_at=2e9)


EVENTS = [
    ("bookings", 1, 7, "UPDATE", "public"), ("bookings", 2, 8, "UPDATE", "public"),
    ("bookings", 3, "7", "INSERT", "public"), ("bookings", 4, None, "UPDATE", "public"),
    ("rooms", 5, 7, "UPDATE", "public"), ("bookings", 6, 7, "DELETE", "sales"),
    ("guests", 7, 8, "UPDATE", "public"), ("bookings", 8, 7, "UPDATE", "public"),
]

CASES = [
    # (filters, scope, ids expected)
    pytest.param(Filters(), scope(), [1, 3, 6, 8], id="tenant-by-index"),
    pytest.param(Filters.of(tables=["bookings"]), scope(), [1, 3, 6, 8], id="tenant-filter"),
    pytest.param(Filters.of(actions=["UPDATE"]), scope(), [1, 8], id="tenant-and-action"),
    pytest.param(Filters(), scope(tables=("public.bookings",)), [1, 3, 8], id="qualified"),
    pytest.param(Filters.of(tables=["public.bookings"]), scope(), [1, 3, 8],
                 id="qualified-filter"),
    pytest.param(Filters.of(tables=["rooms"]), scope(), [], id="filter-outside-scope"),
    pytest.param(Filters(), scope(tables=("bookings", "rooms")), [1, 3, 5, 6, 8],
                 id="two-tables"),
    pytest.param(Filters(), scope(ids=("3", "8")), [3, 8], id="tenant-and-ids"),
    pytest.param(Filters(), scope(tables=None), [1, 3, 5, 6, 8], id="every-table"),
    pytest.param(Filters(), scope(tenant=None), [1, 2, 3, 4, 6, 8], id="no-tenant"),
    pytest.param(Filters.of(ids=["2", "5"]), scope(tables=None, tenant="8"), [2],
                 id="id-filter"),
    pytest.param(Filters(), scope(tenant=None, ids=("3", "5")), [3], id="ids-no-tenant"),
    pytest.param(Filters(), scope(tables=None, tenant=None, ids=("3", "5")), [3, 5],
                 id="ids-any-table"),
    pytest.param(Filters.of(ids=["2", "5", "6"]), scope(tables=None, tenant=None,
                                                          ids=("3", "5")), [5],
                 id="ids-both"),
    pytest.param(Filters.of(ids=["1", "2"]), scope(tenant=None), [1, 2], id="filter-ids"),
    pytest.param(Filters.of(actors=["y"]), scope(tenant=None), [], id="actor"),
    pytest.param(Filters(), scope(tables=None, tenant=None), [1, 2, 3, 4, 5, 6, 7, 8],
                 id="unrestricted"),
]


@pytest.mark.parametrize(("filters", "granted", "expected"), CASES)
def test_a_scoped_stream_gets_what_filters_and_token_allow(
    filters: Filters, granted: Scope, expected: list[int]
) -> None:
    scoped, unscoped = asyncio.run(received_ids(filters, granted))
    assert scoped == expected
    assert unscoped == [spec[1] for spec in EVENTS]  # the unscoped stream: everything


async def received_ids(filters: Filters, granted: Scope) -> list[list[int]]:
    """What a stream with these filters and scope, and one without either, receive."""
    fanout = Fanout(RelayCounters(), max_lag_s=0)
    loop = asyncio.get_running_loop()
    pairs = []
    for chosen in (scopes.scoped_filters(filters, granted), Filters()):
        ours, theirs = socket.socketpair()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
        client = Client(fanout, transport, chosen, catching_up=False,  # type: ignore[arg-type]
                        done=loop.create_future(), chunked=False)
        fanout.add(client)
        pairs.append((transport, theirs))
    events = [event(*spec) for spec in EVENTS]
    for item in events[:4]:  # one pass per event, then one pass for a batch
        fanout.deliver(item)
        await asyncio.sleep(0)
    for item in events[4:]:
        fanout.deliver(item)
    await asyncio.sleep(0.05)
    received = []
    for transport, theirs in pairs:
        transport.close()
        await asyncio.sleep(0.05)
        theirs.settimeout(1)
        data = b""
        while chunk := theirs.recv(65536):
            data += chunk
        theirs.close()
        received.append([json.loads(line[6:])["id"] for line in data.splitlines()
                         if line.startswith(b"data: ")])
    return received


def test_tenant_streams_are_indexed_by_table_and_tenant_and_need_no_check() -> None:
    (kind, keys), exact = _index_keys(scopes.scoped_filters(Filters(), scope()))
    assert (kind, keys, exact) == (scopes.TENANT_INDEX, {"bookings\x1f7"}, True)
    (_, keys), exact = _index_keys(scopes.scoped_filters(Filters.of(actions=["DELETE"]),
                                                         scope()))
    assert keys == {"bookings\x1f7"} and not exact
    (kind, keys), exact = _index_keys(scopes.scoped_filters(Filters(), scope(tenant=None)))
    assert (kind, keys, exact) == ("table", {"bookings"}, True)
    (kind, keys), exact = _index_keys(scopes.scoped_filters(Filters(), scope(ids=("5",))))
    assert (kind, keys, exact) == (scopes.TENANT_INDEX, {"bookings\x1f7"}, False)
