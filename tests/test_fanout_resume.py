"""The resume seam of serve's fan-out, without a database: a resuming client whose replay
read the change log further than the live stream has delivered must get no event twice.
Real sockets (a socketpair), so the bytes checked are the bytes a browser would read."""

from __future__ import annotations

import asyncio
import json
import socket

from pgwatch_cli.commands.serve.fanout import Client, Fanout
from pgwatch_cli.commands.serve.metrics import RelayCounters
from pgwatch_cli.stream.events import ChangeEvent, LogReplaced, parse
from pgwatch_cli.stream.filters import Filters


def event(seq: int) -> ChangeEvent:
    return parse(json.dumps({
        "v": 1, "seq": seq, "table": "bookings", "schema": "public", "action": "UPDATE",
        "id": 1, "pk": {"id": 1}, "actor": "Anna", "changed": ["n"], "diff": {"n": [0, seq]},
        "truncated": False, "txid": 1, "timestamp": "2026-11-28T06:41:00.123456+00:00",
    }))


async def seqs_received(steps: list[tuple[str, int]]) -> list[int]:
    """Play ``steps`` (("deliver", seq) | ("live", after) | ("turn", 0)) against one resuming
    client; the seqs its socket received."""
    fanout = Fanout(RelayCounters(), max_lag_s=0)
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    client = Client(fanout, transport, Filters(), catching_up=True,  # type: ignore[arg-type]
                    done=loop.create_future(), chunked=False)
    fanout.add(client)
    for kind, seq in steps:
        if kind == "deliver":
            fanout.deliver(event(seq))
        elif kind == "live":
            fanout.live(client, seq)
        else:
            await asyncio.sleep(0)  # the loop's turn: the fan-out flushes its batch
    await asyncio.sleep(0.05)
    transport.close()
    await asyncio.sleep(0.05)  # the loop closes the socket: the reader sees the end
    theirs.settimeout(1)
    data = b""
    while chunk := theirs.recv(65536):
        data += chunk
    theirs.close()
    return [int(line.split(b":")[1]) for line in data.splitlines() if line.startswith(b"id:")]


def test_an_event_still_in_the_batch_when_the_replay_ends_is_not_sent_again() -> None:
    # The replay sent 1..5 from the log; 5 was delivered live but not yet flushed.
    steps = [("deliver", 4), ("turn", 0), ("deliver", 5), ("live", 5), ("deliver", 6)]
    assert asyncio.run(seqs_received(steps)) == [6]


def test_a_replay_ahead_of_the_live_stream_waits_for_it() -> None:
    # The replay read 1..8 from the log while the live stream had delivered only 3: events 4..8
    # arriving live afterwards were already sent, 9 is new.
    steps = [("deliver", 3), ("turn", 0), ("live", 8),
             *[step for seq in range(4, 10) for step in (("deliver", seq), ("turn", 0))]]
    assert asyncio.run(seqs_received(steps)) == [9]


def test_events_after_the_replay_go_out_in_order() -> None:
    steps = [("deliver", 2), ("turn", 0), ("live", 2), ("deliver", 3), ("turn", 0),
             ("deliver", 4)]
    assert asyncio.run(seqs_received(steps)) == [3, 4]


async def frames_after(news: LogReplaced) -> tuple[bytes, Fanout]:
    """What a live client's socket receives when ``news`` follows events 1 and 2."""
    fanout = Fanout(RelayCounters(), max_lag_s=0)
    fanout.use_log("0b5e3c1d-aaaa-4bbb-8ccc-123456789abc")
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    client = Client(fanout, transport, Filters(), catching_up=False,  # type: ignore[arg-type]
                    done=loop.create_future(), chunked=False)
    fanout.add(client)
    fanout.deliver(event(1))
    fanout.deliver(event(2))
    fanout.log_replaced(news)
    await asyncio.sleep(0.05)
    transport.close()
    await asyncio.sleep(0.05)
    theirs.settimeout(1)
    data = b""
    while chunk := theirs.recv(65536):
        data += chunk
    theirs.close()
    return data, fanout


def test_a_gap_in_the_log_is_a_reset_after_the_events_before_it() -> None:
    same = "0b5e3c1d-aaaa-4bbb-8ccc-123456789abc"
    data, fanout = asyncio.run(frames_after(LogReplaced(same, same)))
    frames = data.decode().split("\n\n")
    assert frames[0].startswith("id: 0b5e3c1daaaa:1\nevent: change")
    assert frames[1].startswith("id: 0b5e3c1daaaa:2\nevent: change")
    assert frames[2].startswith("id: 0b5e3c1daaaa:2\nevent: reset")
    assert "GAP" in json.loads(frames[2].split("data: ", 1)[1])["reason"]
    # The log goes on: its cached frames stay valid for resuming clients.
    assert fanout.frames.size_bytes > 0 and fanout.last_seq_hint == 2


def test_a_replaced_log_is_a_reset_without_a_resume_point() -> None:
    data, fanout = asyncio.run(frames_after(LogReplaced("old-log", "new-log")))
    frames = data.decode().split("\n\n")
    assert frames[2].startswith("event: reset")
    assert "replaced" in json.loads(frames[2].split("data: ", 1)[1])["reason"]
    assert fanout.frames.size_bytes == 0 and fanout.last_seq_hint is None
