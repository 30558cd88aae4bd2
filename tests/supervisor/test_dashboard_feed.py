"""The dashboard's live feed (``supervisor/dashboard_feed.py``): an observer that never
blocks the event stream, bounded per browser, telling a browser that fell behind to
re-read; it does not take the call events; watchers are bounded."""

from __future__ import annotations

import json

import anyio
import pytest
from warden.supervisor.dashboard_feed import MAX_WATCHERS, QUEUE_SIZE, LiveFeed, Watcher
from warden.supervisor.events import EventStream, StatusChanged, StepStarted
from warden.supervisor.journal import Journal

pytestmark = pytest.mark.anyio


def step(index: int) -> StepStarted:
    return StepStarted(run_id="r-1", status="running", tokens=index, cost_usd=0.5, step=index,
                       role="code", attempt=0, instruction=f"do {index}")


async def read(watcher: Watcher, count: int) -> list[bytes]:
    lines: list[bytes] = []
    with anyio.fail_after(5):
        async for line in watcher.lines():
            lines.append(line)
            if len(lines) == count:
                return lines
    raise AssertionError("unreachable")


def test_the_feed_takes_run_events_but_not_the_call_events() -> None:
    feed = LiveFeed()
    assert feed.takes("status") and feed.takes("turn") and feed.takes("step_started")
    assert not feed.takes("model_call") and not feed.takes("tool_call")


async def test_with_no_browser_watching_an_event_costs_nothing(journal: Journal) -> None:
    feed = LiveFeed()
    await EventStream(journal, [feed]).emit(step(0))
    assert feed.events == 0


async def test_a_browser_gets_each_event_as_one_sse_line(journal: Journal) -> None:
    feed = LiveFeed()
    watcher = feed.watch()
    assert watcher is not None
    stream = EventStream(journal, [feed])
    await stream.emit(step(3))
    await stream.emit(StatusChanged(run_id="r-1", status="succeeded", message="<b>done</b>",
                                    tokens=9, cost_usd=1.25))
    hello, first, second = await read(watcher, 3)
    assert hello.startswith(b":")
    assert first.startswith(b"data: ") and first.endswith(b"\n\n")
    assert json.loads(first[6:]) == {"kind": "step_started", "run_id": "r-1",
                                     "status": "running", "tokens": 3, "cost_usd": 0.5,
                                     "summary": "do 3", "step": 3, "role": "code"}
    assert json.loads(second[6:])["summary"] == "<b>done</b>"  # data, escaped by the page


async def test_a_stalled_browser_never_blocks_the_stream_and_is_told_to_resync(
        journal: Journal) -> None:
    feed = LiveFeed()
    stalled = feed.watch()
    assert stalled is not None
    stream = EventStream(journal, [feed])
    with anyio.fail_after(2):  # would hang if observe waited for the browser
        for index in range(QUEUE_SIZE + 10):
            await stream.emit(step(index))
    assert stalled.dropped == 10 and stalled.lagged
    fresh = feed.watch()  # a browser that reads is not held back by the stalled one
    assert fresh is not None
    await stream.emit(step(999))
    assert json.loads((await read(fresh, 2))[1][6:])["step"] == 999
    assert stalled.dropped == 11
    lines = await read(stalled, 4)
    assert lines[1] == b'data: {"kind":"resync"}\n\n'
    assert json.loads(lines[2][6:])["step"] == 0  # then what the queue held


async def test_an_idle_stream_sends_keep_alives() -> None:
    watcher = LiveFeed().watch()
    assert watcher is not None
    lines: list[bytes] = []
    with anyio.fail_after(5):
        async for line in watcher.lines(keepalive_s=0.01):
            lines.append(line)
            if len(lines) == 3:
                break
    assert lines[1:] == [b": keep-alive\n\n"] * 2


def test_watchers_are_bounded_and_a_closed_one_frees_its_place() -> None:
    feed = LiveFeed()
    watchers = [feed.watch() for _ in range(MAX_WATCHERS)]
    assert all(w is not None for w in watchers)
    assert feed.watch() is None
    first = watchers[0]
    assert first is not None
    first.close()
    assert feed.watchers == MAX_WATCHERS - 1 and feed.watch() is not None
