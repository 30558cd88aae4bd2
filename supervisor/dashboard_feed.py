"""Live run events for the dashboard's browsers: an observer on the daemon's ``EventStream``
fanned out to server-sent-event streams (``GET /api/events``).

The rules:

- **Never in the way.** ``observe`` never awaits: with no browser watching it returns at
  once; otherwise it encodes the event once and offers it to each browser's queue with
  ``send_nowait``. A full queue (a slow or stalled browser) drops the event and marks
  that browser ``lagged``; it is sent ``{"kind": "resync"}`` once it reads again, and the
  page re-reads what it shows. A browser can neither block nor slow a run.
- **Bounded.** Each queue holds ``QUEUE_SIZE`` events; at most ``MAX_WATCHERS`` browsers
  watch at once (one more is refused with ``503``).
- **What is sent** per event: kind, run, status, the run's tokens and dollars so far, the
  step and role if any, and the event's one-line summary. Not the call events
  (``model_call``, ``tool_call``): taking them would have the gate build them on every
  call; the page reads calls from ``/api/runs/<id>`` when a ``turn`` or step event says
  there are new ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from warden.supervisor.events import CALL_KINDS, Event, EventKind

__all__ = ("KEEPALIVE_S", "MAX_WATCHERS", "QUEUE_SIZE", "LiveFeed", "Watcher")

QUEUE_SIZE = 256
MAX_WATCHERS = 32
KEEPALIVE_S = 15.0
"""A comment line this often keeps proxies from closing an idle stream and lets a gone
browser be noticed."""

_encode = msgspec.json.Encoder().encode
_RESYNC = b'data: {"kind":"resync"}\n\n'


class _Live(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    run_id: str
    status: str
    tokens: int
    cost_usd: float
    summary: str
    step: int | None = None
    role: str | None = None


class Watcher:
    """One browser's queue; iterate it for the SSE lines to send."""

    def __init__(self, feed: LiveFeed) -> None:
        self._feed = feed
        self._send: MemoryObjectSendStream[bytes]
        self._receive: MemoryObjectReceiveStream[bytes]
        self._send, self._receive = anyio.create_memory_object_stream[bytes](QUEUE_SIZE)
        self.lagged = False
        self.dropped = 0

    def offer(self, line: bytes) -> None:
        try:
            self._send.send_nowait(line)
        except anyio.WouldBlock:
            self.lagged = True
            self.dropped += 1

    async def lines(self, keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[bytes]:
        """The SSE lines for this browser, a keep-alive comment when idle; forever."""
        yield b": watching\n\n"
        while True:
            with anyio.move_on_after(keepalive_s) as idle:
                line = await self._receive.receive()
            if idle.cancelled_caught:
                yield b": keep-alive\n\n"
                continue
            if self.lagged:
                self.lagged = False
                yield _RESYNC
            yield line

    def close(self) -> None:
        self._feed._watchers.discard(self)
        self._send.close()
        self._receive.close()


class LiveFeed:
    """The observer (``events.Observer``) that feeds the browsers' event streams."""

    def __init__(self) -> None:
        self._watchers: set[Watcher] = set()
        self.events = 0
        """Events offered to at least one browser."""

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def watch(self) -> Watcher | None:
        """A new browser's queue, or ``None`` when ``MAX_WATCHERS`` already watch.
        ``Watcher.close`` ends it."""
        if len(self._watchers) >= MAX_WATCHERS:
            return None
        watcher = Watcher(self)
        self._watchers.add(watcher)
        return watcher

    def takes(self, kind: EventKind) -> bool:
        return kind not in CALL_KINDS

    async def observe(self, event: Event) -> None:
        if not self._watchers:
            return
        self.events += 1
        step = getattr(event, "step", None)
        role = getattr(event, "role", None)
        line = b"data: " + _encode(_Live(
            kind=event.kind, run_id=event.run_id, status=event.status, tokens=event.tokens,
            cost_usd=event.cost_usd, summary=event.summary()[:300], step=step,
            role=role)) + b"\n\n"
        for watcher in tuple(self._watchers):
            watcher.offer(line)
