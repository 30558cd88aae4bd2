"""A fake Anthropic Messages API for the integration tests: a real HTTP server on 127.0.0.1.

``MessagesAPI`` is a stdlib ``ThreadingHTTPServer`` on an OS-chosen port, served from a
thread, speaking just enough of ``POST /v1/messages`` for a whole warden run through the
official SDK:

- **plan** calls (their ``system`` starts "You are the planner") are answered with the
  JSON plan given at construction; **step** turns (any other ``system``: a role's prompt)
  with a plain text answer and no tool use, which ends the step; **synth** calls (their
  ``system`` starts "You are the lead") with a short result. Every answer carries
  ``usage``: input and output tokens, and the **prompt cache**'s reads and writes as the
  API counts them. The request's prefix (tools, then system blocks, then message blocks)
  is cut at each ``cache_control`` point and written to the cache there; the longest prefix
  up to the last point, ending at any block boundary, that an earlier request wrote is read
  (``cache_read_input_tokens``), the rest up to the last point is written
  (``cache_creation_input_tokens``), and what follows it is ``input_tokens``.
  Tokens are the JSON's length / 4, no minimum length, no expiry.
- A **policy** decides, request by request, between ``Answer`` (optionally held for
  ``hold_s`` first: a slow answer) and ``Refuse`` (an error status with the API's error
  body, optional ``retry-after`` and ``details.error_code``, optional latency). Policies
  are plain functions of the ``Request`` record: ``always(...)``, ``hold_nth(...)``,
  ``sliding_window(...)`` (a provider's rate limit: 429 above a request rate).
- A **billing ledger**: an answer's usage is billed only when it is delivered, that is
  when, after any hold, the client is still connected (``select`` says the socket is
  readable and ``recv(1, MSG_PEEK)`` returns ``b""``: the client closed it). Every request
  is recorded (arrival time, kind, role, head of the system prompt, the task it serves,
  the status answered, whether it was billed, whether the client had gone).

Times are ``time.monotonic()``, the clock ``anyio.current_time()`` reads on asyncio, so a
test compares them with its own readings. A hold never sleeps blindly: it polls the socket
every 20 ms and ends early when the client goes (the time is in ``Request.gone_at``) or
when the server stops. Use it as a context manager (``with MessagesAPI(...) as api:``)
or through ``start``/``stop``; ``stop`` releases every held request.
"""

from __future__ import annotations

import hashlib
import json
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Kind = Literal["plan", "step", "synth"]

PLANNER_PREFIX = "You are the planner"
LEAD_PREFIX = "You are the lead"
_ROLE_IN_PROMPT = re.compile(r"You are the (\w+) worker")
_HOLD_POLL_S = 0.02
_MODEL = "claude-fake-1"


@dataclass(frozen=True)
class Answer:
    """Answer as the provider does: a ``message`` with ``usage``; after ``hold_s`` held."""

    hold_s: float = 0.0


@dataclass(frozen=True)
class Refuse:
    """Answer ``status`` with ``{"type": "error", "error": {...}}``.

    ``retry_after`` becomes the ``retry-after`` header (absent when ``None``);
    ``error_code`` becomes ``error.details.error_code`` (the SDK picks its error class by
    it, e.g. ``enforced_spend_limit_reached`` → ``EnforcedSpendLimitReachedError``);
    ``latency_s`` is how long the refusal takes to come.
    """

    status: int
    error_type: str
    message: str
    retry_after: str | None = None
    error_code: str | None = None
    latency_s: float = 0.0


RATE_LIMITED = Refuse(
    429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit",
    retry_after="2",
)
"""A 429 that asks to come back in 2 s."""

SPEND_LIMIT_REACHED = Refuse(
    429, "rate_limit_error", "You have reached your specified workspace API usage limits.",
    error_code="enforced_spend_limit_reached", latency_s=0.3,
)
"""The spend cap: a 429 with no ``retry-after`` that no retry repairs, after 300 ms."""


@dataclass
class Request:
    """One request the server received, and what became of it."""

    index: int
    """Order of arrival, from 0."""
    kind: Kind
    role: str | None
    """The worker role of a step turn (from "You are the <role> worker"), else ``None``."""
    system: str
    """The first 80 characters of the system prompt."""
    task: str
    """The first line of the first user message, without its "Task: " prefix."""
    arrived_at: float
    body: dict[str, object] = field(repr=False)
    status: int | None = None
    """The status answered; ``None`` while held, or if the client went first."""
    answered_at: float | None = None
    billed_tokens: int = 0
    """Input plus output tokens billed for it: 0 unless an answer was delivered."""
    client_gone: bool = False
    """The client had closed the connection when the answer was due."""
    gone_at: float | None = None
    """When the server saw the client go (during a hold), if it did."""

    @property
    def billed(self) -> bool:
        return self.billed_tokens > 0


Policy = Callable[[Request], Answer | Refuse]
"""Picks the answer of a request; called on the server's thread with its record."""


def _unmarked(value: object) -> object:
    """``value`` without its ``cache_control`` keys: a mark is not part of the prefix."""
    if isinstance(value, dict):
        return {k: _unmarked(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list | tuple):
        return [_unmarked(v) for v in value]
    return value


def always(reply: Answer | Refuse) -> Policy:
    """The same answer (or refusal) for every request."""
    return lambda request: reply


def hold_nth(kind: Kind, n: int, hold_s: float) -> Policy:
    """Answer everything at once except the ``n``-th (from 0) request of ``kind``, which
    is held ``hold_s`` first. Counted across all runs, in order of arrival."""
    seen: list[int] = []
    lock = threading.Lock()

    def policy(request: Request) -> Answer | Refuse:
        if request.kind != kind:
            return Answer()
        with lock:
            nth = len(seen)
            seen.append(request.index)
        return Answer(hold_s=hold_s) if nth == n else Answer()

    return policy


def sliding_window(limit: int, window_s: float, *, retry_after: str | None = None) -> Policy:
    """Answer at most ``limit`` requests in any ``window_s`` (counting those answered,
    by arrival time); refuse the others with a retryable 429 (``retry-after`` if given),
    as a provider's requests-per-minute limit does."""
    admitted: deque[float] = deque()
    lock = threading.Lock()
    refusal = Refuse(429, "rate_limit_error",
                     "Number of requests has exceeded your per-minute rate limit",
                     retry_after=retry_after)

    def policy(request: Request) -> Answer | Refuse:
        with lock:
            while admitted and admitted[0] <= request.arrived_at - window_s:
                admitted.popleft()
            if len(admitted) >= limit:
                return refusal
            admitted.append(request.arrived_at)
            return Answer()

    return policy


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: bound, read, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def closed_url() -> str:
    """A base URL whose connections are refused."""
    return f"http://127.0.0.1:{closed_port()}"


class MessagesAPI:
    """The fake Messages API (see the module docstring). Thread-safe to read from tests."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        plan: Sequence[tuple[str, str]] = (("research", "Look at the workspace and report."),),
        step_text: str = "The workspace is empty; nothing else to report.",
        synthesis: str = "Done: the workspace was inspected.",
    ) -> None:
        self.policy: Policy = policy or always(Answer())
        self.plan_text = json.dumps(
            {"steps": [{"role": role, "instruction": text} for role, text in plan]}
        )
        self.step_text = step_text
        self.synthesis = synthesis
        self._requests: list[Request] = []
        self._cached: set[str] = set()  # digests of the prefixes written to the cache
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
            name="fake-messages-api", daemon=True,
        )

    # -- lifecycle --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to give the SDK (``models.anthropic_base_url``)."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Release held requests, stop serving, close the listening socket. Idempotent."""
        self._stopping.set()
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(timeout=10)
        self._httpd.server_close()

    def __enter__(self) -> MessagesAPI:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what the server saw ------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """Every request so far, in order of arrival (a snapshot)."""
        with self._lock:
            return list(self._requests)

    def count(self, kind: Kind | None = None) -> int:
        """Requests received, of ``kind`` or of every kind."""
        return sum(1 for r in self.requests if kind is None or r.kind == kind)

    def counts(self) -> dict[Kind, int]:
        """Requests received per kind (every kind present, 0 when none)."""
        found: dict[Kind, int] = {"plan": 0, "step": 0, "synth": 0}
        for request in self.requests:
            found[request.kind] += 1
        return found

    def billed_tokens(self) -> int:
        """Input plus output tokens of every answer actually delivered."""
        return sum(r.billed_tokens for r in self.requests)

    def for_task(self, fragment: str) -> list[Request]:
        """The requests whose task text contains ``fragment``."""
        return [r for r in self.requests if fragment in r.task]

    def arrived_after(self, when: float) -> list[Request]:
        """The requests that arrived after ``when`` (``time.monotonic()``)."""
        return [r for r in self.requests if r.arrived_at > when]

    def in_flight(self) -> list[Request]:
        """Requests received and not yet answered nor given up by their client."""
        return [r for r in self.requests if r.status is None and not r.client_gone]

    # -- serving ------------------------------------------------------------------------

    def _record(self, body: dict[str, object]) -> Request:
        system = body.get("system")
        system_text = (system if isinstance(system, str)
                       else "".join(b.get("text", "") for b in system) if isinstance(system, list)
                       else "")
        if system_text.startswith(PLANNER_PREFIX):
            kind: Kind = "plan"
        elif system_text.startswith(LEAD_PREFIX):
            kind = "synth"
        else:
            kind = "step"
        role_match = _ROLE_IN_PROMPT.match(system_text)
        task = _first_user_text(body).split("\n", 1)[0].removeprefix("Task: ")
        with self._lock:
            request = Request(
                index=len(self._requests), kind=kind,
                role=role_match.group(1) if kind == "step" and role_match else None,
                system=system_text[:80], task=task, arrived_at=time.monotonic(), body=body,
            )
            self._requests.append(request)
        return request

    def _cache_usage(self, body: dict[str, Any], raw_bytes: int) -> tuple[int, int, int]:
        """``(input, cache read, cache write)`` tokens of a request (module docstring)."""
        segments: list[tuple[object, bool]] = []
        for tool in body.get("tools") or []:
            segments.append((tool, "cache_control" in tool))
        system = body.get("system")
        for block in system if isinstance(system, list) else [system] if system else []:
            segments.append((block, isinstance(block, dict) and "cache_control" in block))
        for message in body.get("messages") or []:
            content = message.get("content")
            for block in content if isinstance(content, list) else [content]:
                segments.append(((message.get("role"), block),
                                 isinstance(block, dict) and "cache_control" in block))
        total = max(1, raw_bytes // 4)
        digest = hashlib.sha256()
        size = 0
        boundaries: list[tuple[str, int]] = []  # (digest of the prefix, its tokens)
        points: list[tuple[str, int]] = []  # the same, at the cache points only
        for segment, marked in segments:
            text = json.dumps(_unmarked(segment), sort_keys=True)
            digest.update(text.encode())
            size += len(text) // 4
            boundaries.append((digest.hexdigest(), size))
            if marked:
                points.append(boundaries[-1])
        # As the API does, a cache point also finds an entry written at an earlier block
        # boundary (a previous turn's last block), not only at itself.
        reach = boundaries[: boundaries.index(points[-1]) + 1] if points else []
        with self._lock:
            read = max((tokens for key, tokens in reach if key in self._cached), default=0)
            write = 0
            if points and points[-1][0] not in self._cached:
                write = max(0, points[-1][1] - read)
            self._cached.update(key for key, _ in points)
        return max(1, total - read - write), read, write

    def _answer_text(self, kind: Kind) -> str:
        return {"plan": self.plan_text, "step": self.step_text, "synth": self.synthesis}[kind]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                if self.path.split("?", 1)[0] != "/v1/messages":
                    self._send(404, _error("not_found_error", f"no route {self.path}"))
                    return
                body = json.loads(raw) if raw else {}
                request = api._record(body)
                reply = api.policy(request)
                if isinstance(reply, Refuse):
                    self._hold(request, reply.latency_s)
                    headers = {"retry-after": reply.retry_after} if reply.retry_after else {}
                    error = _error(reply.error_type, reply.message, reply.error_code)
                    self._finish(request, reply.status, error, headers, tokens=0)
                    return
                self._hold(request, reply.hold_s)
                text = api._answer_text(request.kind)
                input_tokens, cache_read, cache_write = api._cache_usage(body, len(raw))
                output_tokens = max(1, len(text) // 4)
                message = {
                    "id": f"msg_{request.index:04d}", "type": "message", "role": "assistant",
                    "model": str(body.get("model") or _MODEL),
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                              "cache_read_input_tokens": cache_read,
                              "cache_creation_input_tokens": cache_write},
                }
                self._finish(request, 200, message, {},
                             tokens=input_tokens + cache_read + cache_write + output_tokens)

            def _client_gone(self) -> bool:
                """Has the client closed its end? Never blocks."""
                sock = self.connection
                try:
                    readable, _, _ = select.select([sock], [], [], 0)
                    if not readable:
                        return False
                    return sock.recv(1, socket.MSG_PEEK) == b""
                except (OSError, ValueError):
                    return True

            def _hold(self, request: Request, seconds: float) -> None:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline and not api._stopping.is_set():
                    if self._client_gone():
                        request.gone_at = time.monotonic()
                        return
                    api._stopping.wait(min(_HOLD_POLL_S, max(0.0, deadline - time.monotonic())))

            def _finish(
                self, request: Request, status: int, payload: object, headers: dict[str, str],
                *, tokens: int,
            ) -> None:
                # Billed only if delivered: a client that gave up is never charged.
                if request.gone_at is not None or self._client_gone():
                    request.client_gone = True
                    return
                try:
                    self._send(status, payload, headers)
                except OSError:
                    request.client_gone = True
                    return
                request.status = status
                request.answered_at = time.monotonic()
                request.billed_tokens = tokens if status == 200 else 0

            def _send(
                self, status: int, payload: object, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_fake_{status}")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def _error(kind: str, message: str, error_code: str | None = None) -> dict[str, object]:
    error: dict[str, object] = {"type": kind, "message": message}
    if error_code is not None:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error}


def _first_user_text(body: dict[str, object]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(
                str(b.get("text", "")) for b in content
                if isinstance(b, dict) and b.get("type") == "text"
            )
    return ""

