"""``bookwatch serve``'s limits, against a real server and real PostgreSQL: header timeout,
body limit, ``--max-clients``, the ``Host`` rule, token redaction, slow-client cut, ``--max-lag``.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from pgwatch_cli.commands.serve.logs import redact
from pgwatch_cli.commands.serve.security import host_allowed
from tests.fix_cli import run_bookwatch
from tests.serve_helpers import (
    ServeProcess,
    SseReader,
    address_of,
    bump_price,
    newest_seq,
    running_server,
    seq_of,
    stuck_client,
)


def _closed_by_server(sock: socket.socket, within: float) -> float | None:
    """Seconds until the server closed ``sock`` (EOF or reset), None if it did not."""
    started = time.monotonic()
    sock.settimeout(0.5)
    while time.monotonic() - started < within:
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    return None


def _response_head(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


# -- without a database --------------------------------------------------------------------


@pytest.mark.parametrize(("host", "bound", "allowed"), [
    ("localhost:8765", "127.0.0.1", True),
    ("127.0.0.1:8765", "127.0.0.1", True),
    ("[::1]:8765", "127.0.0.1", True),
    ("app.localhost", "127.0.0.1", True),
    ("evil.example:8765", "127.0.0.1", False),
    ("127.0.0.1.nip.io", "127.0.0.1", False),
    ("192.168.1.5:8765", "127.0.0.1", False),
    ("192.168.1.5:8765", "0.0.0.0", True),
    ("box.lan:8765", "box.lan", True),
    ("box.lan:x", "box.lan", False),
    ("[::1", "127.0.0.1", False),
])
def test_host_rule(host: str, bound: str, allowed: bool) -> None:
    assert host_allowed(host, bound) is allowed


def test_redact_takes_the_token_out_of_urls_and_headers() -> None:
    line = 'GET /events?table=x&token=s3cret&id=1 HTTP/1.1 "Authorization: Bearer s3cret"'
    cleaned = redact(line)
    assert "s3cret" not in cleaned
    assert "token=…" in cleaned and "table=x" in cleaned and "id=1" in cleaned


# -- with a server -------------------------------------------------------------------------


def test_a_request_whose_headers_never_complete_is_closed(demo_dsn: str) -> None:
    # The limit is 10 s by default; shortened here (ServeOptions.header_timeout_s).
    with running_server(demo_dsn, header_timeout_s=2) as server:
        half = socket.create_connection(address_of(server.url), timeout=5)
        half.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line, ever
        silent = socket.create_connection(address_of(server.url), timeout=5)
        with half, silent:
            took = _closed_by_server(half, within=15)
            assert took is not None, "a half-open request was never closed"
            assert 1 < took < 10, f"closed after {took:.1f} s (limit 2 s)"
            assert _closed_by_server(silent, within=10) is not None
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200


def test_a_body_over_1_mb_is_refused_without_being_read(demo_dsn: str) -> None:
    with running_server(demo_dsn, demo=True) as server:
        with socket.create_connection(address_of(server.url), timeout=10) as sock:
            sock.sendall(b"PUT /api/bookings/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 300000000\r\n\r\n")
            sock.sendall(b"x" * 65536)
            head = _response_head(sock)
            assert head.startswith(b"HTTP/1.1 413"), head
            assert _closed_by_server(sock, within=10) is not None
        # Chunked, so no length is announced: refused once 1 MB has come in.
        with socket.create_connection(address_of(server.url), timeout=10) as sock:
            sock.sendall(b"PUT /api/bookings/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            piece = b"y" * 65536
            for _ in range(17):  # 1 MB and a bit
                sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
            head = _response_head(sock)
            assert head.startswith(b"HTTP/1.1 413"), head
        small = httpx.put(server.url + "/api/bookings/1", json={"status": "x"}, timeout=10)
        assert small.status_code != 413


def test_a_foreign_host_is_refused_without_a_token(demo_dsn: str) -> None:
    with running_server(demo_dsn) as server:
        for path in ("/events", "/presence", "/healthz"):
            refused = httpx.get(server.url + path, headers={"Host": "evil.example"}, timeout=10)
            assert refused.status_code == 421, path
        _, port = address_of(server.url)
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            assert httpx.get(server.url + "/presence", headers={"Host": host},
                             timeout=10).status_code == 200
    # With a token the token is the protection: any name may be used (a reverse proxy's).
    with running_server(demo_dsn, token="t") as server:
        assert httpx.get(server.url + "/presence", params={"token": "t"},
                         headers={"Host": "bookwatch.example"}, timeout=10).status_code == 200


def test_max_clients_answers_503_with_retry_after(demo_dsn: str) -> None:
    with running_server(demo_dsn, max_clients=2) as server:
        first, second = SseReader(server.url), SseReader(server.url)
        refused = httpx.get(server.url + "/events", timeout=10)
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) > 0
        second.close()
        deadline = time.monotonic() + 10
        while httpx.get(server.url + "/healthz", timeout=10).json()["clients"] > 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with SseReader(server.url) as third:
            assert third.status == 200
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        first.close()
    assert "bookwatch_sse_refused_total 1" in metrics


def test_a_client_that_never_reads_has_its_connection_closed(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    with running_server(demo_dsn, client_buffer=64 * 1024) as server:
        stuck = stuck_client(server.url)
        deadline = time.monotonic() + 10
        while httpx.get(server.url + "/healthz", timeout=10).json()["clients"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for batch in range(8):
            postgresql.execute(
                "UPDATE bookings SET bemerkungen = repeat(%s, 3000) WHERE id <= 200",
                (str(batch),))
        deadline = time.monotonic() + 30
        while httpx.get(server.url + "/healthz", timeout=10).json()["clients"] > 0:
            assert time.monotonic() < deadline, "the stuck client was never cut"
            time.sleep(0.1)
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        # From the client's side: the server closed the connection (a reset, since it would
        # not take the last bytes), though this client never read a byte.
        with stuck:
            assert _closed_by_server(stuck, within=15) is not None
    assert "bookwatch_sse_lagging_clients_cut_total 1" in metrics


def _forge_old_event(conn: psycopg.Connection[Any], age: timedelta) -> int:
    """Append an event to the change log whose commit was ``age`` ago, and wake listeners (as a
    relay that fell behind would deliver it). Returns its seq."""
    row = conn.execute("SELECT payload FROM bookwatch.change_log ORDER BY seq DESC LIMIT 1"
                       ).fetchone()
    assert row is not None
    payload = json.loads(row[0])
    seq_row = conn.execute("SELECT nextval('bookwatch.change_seq')").fetchone()
    assert seq_row is not None
    payload["seq"] = int(seq_row[0])
    payload["timestamp"] = (datetime.now(UTC) - age).isoformat()
    text = json.dumps(payload)
    with conn.transaction():
        conn.execute("INSERT INTO bookwatch.change_log (seq, channel, payload)"
                     " VALUES (%s, 'booking_changes', %s)", (payload["seq"], text))
        conn.execute("SELECT pg_notify('booking_changes', %s)", (text,))
    return payload["seq"]


def test_events_older_than_max_lag_become_a_reset(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    bump_price(postgresql, 1)
    with running_server(demo_dsn, max_lag_s=5) as server, SseReader(server.url) as reader:
        stale = _forge_old_event(postgresql, timedelta(seconds=60))
        reset = reader.next("reset")
        assert "behind" in json.loads(reset.data)["reason"]
        assert seq_of(reset) == stale
        fresh = bump_price(postgresql, 2)
        change = reader.next("change")
        assert seq_of(change) == fresh, "the stale event was relayed"
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert fresh == newest_seq(postgresql)
    assert "bookwatch_sse_lag_skipped_total 1" in metrics


def test_the_token_never_reaches_the_logs(demo_dsn: str) -> None:
    server = ServeProcess("--dsn", demo_dsn, "--token", "s3cret-t0ken",
                          env={"BOOKWATCH_DEBUG": "1"})
    try:
        with SseReader(server.url, params={"token": "s3cret-t0ken", "table": "bookings"}):
            pass
        httpx.get(server.url + "/presence", params={"token": "s3cret-t0ken"}, timeout=10)
        httpx.get(server.url + "/presence", params={"token": "wrong-guess"}, timeout=10)
        httpx.get(server.url + "/metrics",
                  headers={"Authorization": "Bearer s3cret-t0ken"}, timeout=10)
        code, _ = server.stop(signal.SIGTERM, within=10)
        assert code == 0
    finally:
        server.kill()
    log = "".join(server.stderr)
    assert "/presence" in log and "/events" in log, log  # access lines were written
    assert "token=…" in log
    assert "s3cret-t0ken" not in log and "wrong-guess" not in log


def test_an_http_1_0_client_gets_bare_frames(
    demo_dsn: str, postgresql: psycopg.Connection[Any]
) -> None:
    # nginx talks HTTP/1.0 to upstreams unless told otherwise: no chunked encoding then.
    with running_server(demo_dsn) as server, \
            socket.create_connection(address_of(server.url), timeout=10) as sock:
        sock.sendall(b"GET /events HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        head = _response_head(sock)
        assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
        assert b"transfer-encoding" not in head.lower()
        seq = bump_price(postgresql, 5)
        data = head.split(b"\r\n\r\n", 1)[1]
        while f":{seq}\nevent: change\n".encode() not in data:
            data += sock.recv(65536)
    assert data.startswith(b"retry: ")
    assert re.search(rb"\nid: [0-9a-f]{12}:%d\nevent: change\ndata: \{" % seq, data), data


def test_a_refused_cors_origin_is_logged_once_with_the_option_that_allows_it(
    demo_dsn: str
) -> None:
    server = ServeProcess("--dsn", demo_dsn, "--allow-origin", "https://app.example")
    try:
        for _ in range(3):
            httpx.get(server.url + "/presence", headers={"Origin": "https://evil.example"},
                      timeout=10)
        httpx.options(server.url + "/events", timeout=10, headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
        httpx.get(server.url + "/presence", headers={"Origin": "https://app.example"},
                  timeout=10)
        code, _ = server.stop(signal.SIGTERM, within=10)
        assert code == 0
    finally:
        server.kill()
    log = "".join(server.stderr)
    lines = [line for line in log.splitlines() if "https://evil.example" in line]
    assert len(lines) == 1, log
    assert "--allow-origin https://evil.example" in lines[0]
    assert "app.example" not in log


STRONG_TOKEN = "k3Jq9vX2pLm7Rt4Z"


def test_failed_tokens_are_logged_rate_limited_and_an_address_that_keeps_guessing_gets_429(
    demo_dsn: str
) -> None:
    server = ServeProcess("--dsn", demo_dsn, env={"BOOKWATCH_TOKEN": STRONG_TOKEN})
    try:
        statuses = [httpx.get(server.url + "/presence", params={"token": f"guess-{n}"},
                              timeout=10).status_code for n in range(20)]
        assert statuses == [401] * 20
        blocked = httpx.get(server.url + "/presence", params={"token": STRONG_TOKEN},
                            timeout=10)
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["Retry-After"]) <= 60
        # Not an endpoint that needs no token.
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        code, _ = server.stop(signal.SIGTERM, within=10)
        assert code == 0
    finally:
        server.kill()
    log = "".join(server.stderr)
    failures = [line for line in log.splitlines() if "wrong token" in line]
    assert len(failures) == 1, log  # one line for the burst, not twenty
    assert "guess-" not in log and STRONG_TOKEN not in log


@pytest.mark.parametrize("token", ["a", "short-token", "aaaaaaaaaaaaaaaaaaaaaaaa",
                                   "abababababababababab"])
def test_a_network_bound_server_refuses_a_weak_token(dsn: str, token: str) -> None:
    result = run_bookwatch("serve", "--dsn", dsn, "--host", "0.0.0.0", "--port", "0",
                           env={"BOOKWATCH_TOKEN": token})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("Error:") == 1 and "weak token" in result.stderr
    assert len(token) < 5 or token not in result.stderr  # the token is never echoed


def test_a_strong_token_serves_the_network_and_a_weak_one_still_serves_loopback(
    demo_dsn: str
) -> None:
    for args, token in ((("--host", "0.0.0.0"), STRONG_TOKEN), ((), "a")):
        server = ServeProcess("--dsn", demo_dsn, *args, env={"BOOKWATCH_TOKEN": token})
        try:
            code, _ = server.stop(signal.SIGTERM, within=10)
            assert code == 0, "".join(server.stderr)
        finally:
            server.kill()


def test_insecure_allows_a_weak_token_on_the_network(demo_dsn: str) -> None:
    server = ServeProcess("--dsn", demo_dsn, "--host", "0.0.0.0", "--insecure",
                          env={"BOOKWATCH_TOKEN": "a"})
    try:
        code, _ = server.stop(signal.SIGTERM, within=10)
        assert code == 0, "".join(server.stderr)
    finally:
        server.kill()
