"""A real HTTP server for the webhook tests: the standard library's ``ThreadingHTTPServer``
on 127.0.0.1, in a thread, recording every POST and answering from a script per path.

``open_receiver()`` starts it and always stops it (releasing held requests first).
Tests wait for requests with ``await receiver.wait_for(n)`` (a condition variable waited
on in a worker thread, with a deadline), never with a sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio


@dataclass(frozen=True)
class Answer:
    """What the receiver answers one request with; ``hang``: nothing, until stopped;
    ``drop``: nothing, the connection closed at once."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    drop: bool = False


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    at: float
    """``time.monotonic()`` when it arrived."""
    answered: int | None
    """The status it was answered with; ``None``: held, never answered."""


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: dict[str, list[Answer]] = {}
        self._changed = threading.Condition()
        self.release = threading.Event()
        self.port = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *answers: Answer) -> None:
        """Answer the next requests to ``path`` with ``answers`` in turn, then 200."""
        with self._changed:
            self._script.setdefault(path, []).extend(answers)

    def next_answer(self, path: str) -> Answer:
        with self._changed:
            queued = self._script.get(path)
            return queued.pop(0) if queued else Answer()

    def record(self, request: Received) -> None:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()

    def to(self, path: str) -> list[Received]:
        with self._changed:
            return [r for r in self.requests if r.path == path]

    async def wait_for(self, count: int, path: str = "/hook",
                       timeout: float = 10.0) -> list[Received]:
        """The first ``count`` requests to ``path``, once they have arrived; raises
        ``TimeoutError`` after ``timeout`` seconds."""
        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(lambda: len(self.to_locked(path)) >= count,
                                              timeout)
        if not await anyio.to_thread.run_sync(wait, abandon_on_cancel=True):
            raise TimeoutError(f"{count} requests to {path} within {timeout} s: "
                               f"got {len(self.to(path))}")
        return self.to(path)[:count]

    def to_locked(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            answer = receiver.next_answer(self.path)
            headers = {name.lower(): value for name, value in self.headers.items()}
            receiver.record(Received(self.path, headers, body, time.monotonic(),
                                     None if answer.hang or answer.drop else answer.status))
            if answer.hang or answer.drop:
                if answer.hang:
                    receiver.release.wait(60)
                self.close_connection = True
                return
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "2")
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(b"ok")
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass  # the test's own assertions say what happened

    return Handler


@contextmanager
def open_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
