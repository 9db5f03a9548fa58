"""Presence bookkeeping without a database: people not tabs, coalesced frames, names."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from pgwatch_cli.commands.serve.presence import (
    InvalidPresence,
    NewestFrameWriter,
    Presence,
    check,
)
from tests.presence_helpers import Frames

T = TypeVar("T")


def run(test: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(test())


def lists(watcher: Frames) -> list[list[str]]:
    bodies = [frame.decode().split("data: ", 1)[1] for frame in watcher.frames]
    return [json.loads(body)["viewers"] for body in bodies]


def test_a_person_with_three_tabs_is_one_viewer_until_the_last_tab_closes() -> None:
    async def scenario() -> None:
        presence = Presence()
        tabs = [Frames(), Frames(), Frames()]
        for tab in tabs:
            presence.join("bookings:1", "Anna", tab)
        assert presence.viewers("bookings:1") == ["Anna"]
        assert presence.viewer_count() == 3
        assert presence.take_changes() == {("bookings:1", "Anna"): True}
        presence.leave("bookings:1", "Anna", tabs[0])
        presence.leave("bookings:1", "Anna", tabs[1])
        assert presence.snapshot() == {"bookings:1": ["Anna"]}
        assert presence.take_changes() == {}  # nothing for the shared map to learn
        presence.leave("bookings:1", "Anna", tabs[2])
        assert presence.snapshot() == {}
        assert presence.take_changes() == {("bookings:1", "Anna"): False}
        # Every tab got the list when it joined.
        assert all(lists(tab) and lists(tab)[0] == ["Anna"] for tab in tabs)
    run(scenario)


def test_many_joins_within_100_ms_make_a_few_frames_ending_with_everyone() -> None:
    async def scenario() -> list[list[str]]:
        presence = Presence()
        first = Frames()
        presence.join("bookings:7", "viewer-000", first)
        for number in range(1, 100):
            presence.join("bookings:7", f"viewer-{number:03}", Frames())
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.6)
        return lists(first)

    seen = run(scenario)
    assert len(seen) <= 3, len(seen)
    assert seen[-1] == [f"viewer-{number:03}" for number in range(100)]


def test_a_join_and_leave_within_the_interval_sends_nothing_new() -> None:
    async def scenario() -> list[list[str]]:
        presence = Presence()
        anna = Frames()
        presence.join("bookings:1", "Anna", anna)
        ben = Frames()
        presence.join("bookings:1", "Ben", ben)  # within the interval: scheduled
        presence.leave("bookings:1", "Ben", ben)
        await asyncio.sleep(0.5)
        return lists(anna)

    assert run(scenario) == [["Anna"]]


def test_other_processes_viewers_are_merged_once_per_name_and_announced() -> None:
    async def scenario() -> tuple[list[list[str]], dict[str, list[str]]]:
        presence = Presence()
        anna = Frames()
        presence.join("bookings:1", "Anna", anna)
        await asyncio.sleep(0.3)
        presence.replace_others({"bookings:1": ["Anna", "Ben"], "bookings:2": ["Clara"]})
        await asyncio.sleep(0.3)
        snapshot = presence.snapshot()
        presence.replace_others({})
        await asyncio.sleep(0.3)
        return lists(anna), snapshot

    seen, snapshot = run(scenario)
    assert snapshot == {"bookings:1": ["Anna", "Ben"], "bookings:2": ["Clara"]}
    assert seen == [["Anna"], ["Anna", "Ben"], ["Anna"]]


def test_a_tab_joining_a_list_that_does_not_change_still_gets_it() -> None:
    async def scenario() -> tuple[list[list[str]], list[list[str]]]:
        presence = Presence()
        presence.replace_others({"bookings:1": ["Anna"]})  # Anna, on another server
        await asyncio.sleep(0.3)
        ben, anna = Frames(), Frames()
        presence.join("bookings:1", "Ben", ben)
        await asyncio.sleep(0.3)
        presence.join("bookings:1", "Anna", anna)  # a tab here: the list stays the same
        await asyncio.sleep(0.3)
        return lists(ben), lists(anna)

    ben, anna = run(scenario)
    assert ben == [["Anna", "Ben"]]
    assert anna == [["Anna", "Ben"]]


def test_a_tab_joining_while_a_send_is_pending_gets_the_list_once() -> None:
    async def scenario() -> tuple[list[list[str]], list[list[str]]]:
        presence = Presence()
        anna, ben = Frames(), Frames()
        presence.join("bookings:1", "Anna", anna)  # sent at once
        presence.join("bookings:1", "Ben", ben)  # within the interval: scheduled
        second_tab = Frames()
        presence.join("bookings:1", "Anna", second_tab)  # waits for that send
        presence.leave("bookings:1", "Ben", ben)  # ... which then has nothing new
        await asyncio.sleep(0.5)
        return lists(anna), lists(second_tab)

    anna, second_tab = run(scenario)
    assert anna == [["Anna"]]
    assert second_tab == [["Anna"]]


def test_unicode_names_are_people_and_composed_the_same_way() -> None:
    async def scenario() -> list[str]:
        presence = Presence()
        presence.join("bookings:1", "李雷", Frames())
        presence.join("bookings:1", "Ren\u00e9e", Frames())
        presence.join("bookings:1", "Rene\u0301e", Frames())  # the same name, decomposed
        return presence.viewers("bookings:1")

    assert run(scenario) == ["Ren\u00e9e", "李雷"]
    check("李雷", "bookings:1")
    check("x" * 100, "bookings:1")


@pytest.mark.parametrize(
    ("viewer", "viewing"),
    [
        ("", "bookings:1"),
        ("   ", "bookings:1"),
        ("x" * 101, "bookings:1"),
        ("Anna\nBen", "bookings:1"),
        ("Anna\x00", "bookings:1"),
        ("\u202eannA", "bookings:1"),
        ("Anna\u2028", "bookings:1"),
        ("Anna", "bookings"),
        ("Anna", "bookings:1\r"),
        ("Anna", "b:" + "1" * 300),
    ],
)
def test_names_with_control_characters_or_too_long_are_refused(viewer: str, viewing: str) -> None:
    with pytest.raises(InvalidPresence):
        check(viewer, viewing)


def test_a_stream_that_does_not_read_holds_one_presence_frame_not_all_of_them() -> None:
    async def scenario() -> tuple[list[bytes], int]:
        unblocked = asyncio.Event()
        written: list[bytes] = []

        async def write(frame: bytes) -> None:
            await unblocked.wait()  # the peer does not read
            written.append(frame)

        writer = NewestFrameWriter(write)
        for number in range(10_000):
            writer.push(f"frame {number}".encode())
            await asyncio.sleep(0)
        tasks = len(asyncio.all_tasks())
        unblocked.set()
        await asyncio.sleep(0.01)
        writer.close()
        return written, tasks

    written, tasks = run(scenario)
    # The frame being written when the peer stalled, then only the newest.
    assert written == [b"frame 0", b"frame 9999"]
    assert tasks == 2  # the test's own and one writer
