"""``AnthropicModel`` through the real SDK, against a local server speaking the Messages API.

The server (``MessagesAPIServer``) is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 with
an OS-chosen port, in a thread. It records every request it gets and answers each from a
queue of canned responses, so a test states what the provider says and asserts on what
the SDK sent. Nothing sleeps: the retry test has the server ask for a 1 ms backoff
(``retry-after-ms``), and the timeout test holds its response on an event until the
client has given up.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import structlog
from warden.actors import anthropic_model
from warden.actors.anthropic_model import AnthropicModel
from warden.actors.errors import (
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelUnavailableError,
)
from warden.actors.model import ModelRequest
from warden.bus.wire import Message, TextBlock, ToolResultBlock, ToolSpec, ToolUseBlock, Usage

API_KEY = "sk-ant-test-0123456789abcdef-SECRET"
# Not a real model id: the SDK warns about deprecated ones, and any real one may become so.
MODEL = "claude-test-model"


@pytest.fixture
def captured_logs(monkeypatch: pytest.MonkeyPatch) -> list[MutableMapping[str, object]]:
    """Every event the adapter logs during the test, at every level.

    ``structlog.testing.capture_logs`` cannot be used: the suite configures structlog at
    warning level with ``cache_logger_on_first_use``, so a module logger once used keeps
    that configuration. The module's logger is swapped for a capturing one instead.
    """
    capture = structlog.testing.LogCapture()
    logger = structlog.wrap_logger(
        None,
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    monkeypatch.setattr(anthropic_model, "log", logger)
    return capture.entries


# -- the fake Messages API --------------------------------------------------------------


@dataclass
class Canned:
    """One response of the fake API. ``hold``: answer only once this event is set."""

    status: int
    body: object
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, object]


class MessagesAPIServer:
    """A Messages API endpoint on 127.0.0.1 answering from a queue of canned responses.

    With the queue empty it answers 599 with a body saying so, which fails the test that
    forgot to queue a response loudly rather than hanging it.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._canned: queue.SimpleQueue[Canned] = queue.SimpleQueue()
        self._holds: list[threading.Event] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                server.received.append(
                    Received(
                        method="POST",
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=json.loads(raw) if raw else {},
                    )
                )
                try:
                    canned = server._canned.get_nowait()
                except queue.Empty:
                    canned = Canned(599, {"type": "error", "error": {"message": "nothing queued"}})
                if canned.hold is not None:
                    canned.hold.wait(timeout=30)
                payload = (
                    canned.body.encode()
                    if isinstance(canned.body, str)
                    else json.dumps(canned.body).encode()
                )
                try:
                    self.send_response(canned.status)
                    content_type = (
                        "text/html" if isinstance(canned.body, str) else "application/json"
                    )
                    self.send_header("content-type", content_type)
                    self.send_header("content-length", str(len(payload)))
                    self.send_header("request-id", f"req_{len(server.received):03d}")
                    for name, value in canned.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test); nothing to answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        # A short poll interval, because ``shutdown`` waits for the loop to notice it.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def reply(self, canned: Canned) -> None:
        if canned.hold is not None:
            self._holds.append(canned.hold)
        self._canned.put(canned)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        for hold in self._holds:
            hold.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def api_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MessagesAPIServer]:
    # The SDK's HTTP client honours proxy variables and extra headers from the
    # environment; none of them may stand between the client and 127.0.0.1.
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "ANTHROPIC_CUSTOM_HEADERS",
    ):
        monkeypatch.delenv(name, raising=False)
    server = MessagesAPIServer()
    server.start()
    yield server
    server.stop()


@asynccontextmanager
async def open_model(
    base_url: str, *, max_retries: int = 0, timeout_s: float = 10.0
) -> AsyncIterator[AnthropicModel]:
    model = AnthropicModel(
        api_key=API_KEY, base_url=base_url, timeout=timeout_s, max_retries=max_retries
    )
    try:
        yield model
    finally:
        await model.aclose()


def message_body(
    content: list[dict[str, object]],
    *,
    stop_reason: str = "end_turn",
    usage: dict[str, object] | None = None,
) -> dict[str, object]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage if usage is not None else {"input_tokens": 10, "output_tokens": 5},
    }


def error_body(kind: str, message: str) -> dict[str, object]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def user(text: str) -> Message:
    return Message(role="user", content=[TextBlock(text=text)])


READ_FILE = ToolSpec(
    name="read_file",
    description="Read a file of the workspace.",
    input_schema={
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
)


def request(messages: list[Message], *, tools: list[ToolSpec] | None = None) -> ModelRequest:
    return ModelRequest(
        model=MODEL,
        system="You are the code worker.",
        messages=messages,
        max_tokens=321,
        tools=tools or [],
    )


# -- replies ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_text_reply_maps_content_stop_reason_and_every_kind_of_usage(
    api_server: MessagesAPIServer,
) -> None:
    api_server.reply(
        Canned(
            200,
            message_body(
                [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world."}],
                usage={
                    "input_tokens": 11,
                    "output_tokens": 22,
                    "cache_creation_input_tokens": 33,
                    "cache_read_input_tokens": 44,
                },
            ),
        )
    )
    async with open_model(api_server.base_url) as model:
        reply = await model.complete(request([user("hi")]))

    assert reply.content == [TextBlock(text="Hello, "), TextBlock(text="world.")]
    assert reply.text == "Hello, world."
    assert reply.stop_reason == "end_turn"
    assert reply.model == MODEL
    assert reply.usage == Usage(
        input_tokens=11,
        output_tokens=22,
        cache_creation_input_tokens=33,
        cache_read_input_tokens=44,
    )
    assert reply.latency_ms > 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "cache_fields",
    [
        {},
        {"cache_creation_input_tokens": None, "cache_read_input_tokens": None},
    ],
    ids=["absent", "null"],
)
async def test_absent_or_null_cache_usage_counts_as_zero(
    api_server: MessagesAPIServer, cache_fields: dict[str, object]
) -> None:
    usage: dict[str, object] = {"input_tokens": 7, "output_tokens": 3, **cache_fields}
    api_server.reply(Canned(200, message_body([{"type": "text", "text": "ok"}], usage=usage)))
    async with open_model(api_server.base_url) as model:
        reply = await model.complete(request([user("hi")]))

    assert reply.usage == Usage(input_tokens=7, output_tokens=3)


@pytest.mark.anyio
async def test_request_carries_model_system_messages_tools_with_input_schema_and_max_tokens(
    api_server: MessagesAPIServer,
) -> None:
    api_server.reply(Canned(200, message_body([{"type": "text", "text": "ok"}])))
    async with open_model(api_server.base_url) as model:
        await model.complete(request([user("read main.py")], tools=[READ_FILE]))

    [sent] = api_server.received
    assert sent.path == "/v1/messages"
    # SDK 2.x sends the key as a bearer token (1.x and older sent ``x-api-key``).
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body["model"] == MODEL
    assert sent.body["system"] == "You are the code worker."
    assert sent.body["max_tokens"] == 321
    assert sent.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "read main.py"}]}
    ]
    assert sent.body["tools"] == [
        {
            "name": "read_file",
            "description": "Read a file of the workspace.",
            "input_schema": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        }
    ]


@pytest.mark.anyio
async def test_request_without_tools_or_system_leaves_them_out(
    api_server: MessagesAPIServer,
) -> None:
    api_server.reply(Canned(200, message_body([{"type": "text", "text": "ok"}])))
    async with open_model(api_server.base_url) as model:
        await model.complete(
            ModelRequest(model=MODEL, system="", messages=[user("hi")], max_tokens=5)
        )

    [sent] = api_server.received
    assert "tools" not in sent.body
    assert "system" not in sent.body


@pytest.mark.anyio
async def test_tool_use_then_tool_result_round_trip_carries_the_same_id(
    api_server: MessagesAPIServer,
) -> None:
    api_server.reply(
        Canned(
            200,
            message_body(
                [
                    {"type": "text", "text": "Let me look."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01ABC",
                        "name": "read_file",
                        "input": {"path": "main.py"},
                    },
                ],
                stop_reason="tool_use",
            ),
        )
    )
    api_server.reply(Canned(200, message_body([{"type": "text", "text": "It prints 42."}])))
    history = [user("what does main.py print?")]

    async with open_model(api_server.base_url) as model:
        first = await model.complete(request(history, tools=[READ_FILE]))
        assert first.stop_reason == "tool_use"
        [_, tool_use] = first.content
        assert tool_use == ToolUseBlock(
            id="toolu_01ABC", name="read_file", input={"path": "main.py"}
        )

        assert isinstance(tool_use, ToolUseBlock)
        history += [
            Message(role="assistant", content=first.content),
            Message(
                role="user",
                content=[ToolResultBlock(tool_use_id=tool_use.id, content="print(42)")],
            ),
        ]
        second = await model.complete(request(history, tools=[READ_FILE]))

    assert second.text == "It prints 42."
    [_, sent] = api_server.received
    assert sent.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "what does main.py print?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_01ABC",
                    "name": "read_file",
                    "input": {"path": "main.py"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01ABC",
                    "content": "print(42)",
                    "is_error": False,
                }
            ],
        },
    ]


@pytest.mark.anyio
async def test_failed_tool_result_is_sent_with_is_error(api_server: MessagesAPIServer) -> None:
    api_server.reply(Canned(200, message_body([{"type": "text", "text": "ok"}])))
    history = [
        user("go"),
        Message(
            role="assistant",
            content=[ToolUseBlock(id="toolu_9", name="read_file", input={"path": "x"})],
        ),
        Message(
            role="user",
            content=[ToolResultBlock(tool_use_id="toolu_9", content="no such file", is_error=True)],
        ),
    ]
    async with open_model(api_server.base_url) as model:
        await model.complete(request(history, tools=[READ_FILE]))

    [sent] = api_server.received
    messages = sent.body["messages"]
    assert isinstance(messages, list)
    assert messages[2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_9",
            "content": "no such file",
            "is_error": True,
        }
    ]


@pytest.mark.anyio
async def test_blocks_warden_does_not_represent_are_dropped(
    api_server: MessagesAPIServer, captured_logs: list[MutableMapping[str, object]]
) -> None:
    api_server.reply(
        Canned(
            200,
            message_body(
                [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "answer"},
                ]
            ),
        )
    )
    async with open_model(api_server.base_url) as model:
        reply = await model.complete(request([user("hi")]))

    assert reply.content == [TextBlock(text="answer")]
    [entry] = captured_logs
    assert entry["dropped_blocks"] == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        "<html><body>Welcome to the captive portal</body></html>",
        {"unexpected": True},
        {**message_body([{"type": "text", "text": "x"}]), "usage": None},
    ],
    ids=["html-page", "wrong-shape", "no-usage"],
)
async def test_a_200_that_is_not_a_message_is_unavailable(
    api_server: MessagesAPIServer, body: object
) -> None:
    api_server.reply(Canned(200, body))
    async with open_model(api_server.base_url) as model:
        with pytest.raises(ModelUnavailableError) as caught:
            await model.complete(request([user("hi")]))

    assert caught.value.retryable is True
    assert "not a Messages API message" in caught.value.problem


# -- errors -----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "kind", "expected", "retryable"),
    [
        (429, "rate_limit_error", ModelRateLimitedError, True),
        (529, "overloaded_error", ModelRateLimitedError, True),
        (500, "api_error", ModelUnavailableError, True),
        (502, "api_error", ModelUnavailableError, True),
        (503, "api_error", ModelUnavailableError, True),
        (400, "invalid_request_error", ModelRequestError, False),
        (401, "authentication_error", ModelRequestError, False),
        (403, "permission_error", ModelRequestError, False),
        (404, "not_found_error", ModelRequestError, False),
        (413, "request_too_large", ModelRequestError, False),
        (422, "invalid_request_error", ModelRequestError, False),
    ],
)
async def test_error_status_is_translated_with_its_retryable_flag(
    api_server: MessagesAPIServer,
    status: int,
    kind: str,
    expected: type[ModelError],
    retryable: bool,
) -> None:
    api_server.reply(Canned(status, error_body(kind, f"the provider says {status}")))
    async with open_model(api_server.base_url, max_retries=0) as model:
        with pytest.raises(ModelError) as caught:
            await model.complete(request([user("hi")]))

    error = caught.value
    assert type(error) is expected
    assert error.retryable is retryable
    assert error.status == status
    assert error.model == MODEL
    assert f"the provider says {status}" in str(error)
    assert kind in str(error)
    assert len(api_server.received) == 1  # max_retries=0: the SDK did not try again


@pytest.mark.anyio
async def test_bad_request_is_not_retried_even_with_retries_allowed(
    api_server: MessagesAPIServer,
) -> None:
    api_server.reply(Canned(400, error_body("invalid_request_error", "max_tokens: too big")))
    async with open_model(api_server.base_url, max_retries=2) as model:
        with pytest.raises(ModelRequestError) as caught:
            await model.complete(request([user("hi")]))

    assert caught.value.retryable is False
    assert "max_tokens: too big" in caught.value.problem
    assert len(api_server.received) == 1


@pytest.mark.anyio
async def test_sdk_retries_a_500_and_the_second_attempt_succeeds(
    api_server: MessagesAPIServer,
) -> None:
    api_server.reply(
        Canned(500, error_body("api_error", "hiccup"), headers={"retry-after-ms": "1"})
    )
    api_server.reply(Canned(200, message_body([{"type": "text", "text": "recovered"}])))
    async with open_model(api_server.base_url, max_retries=1) as model:
        reply = await model.complete(request([user("hi")]))

    assert reply.text == "recovered"
    assert len(api_server.received) == 2
    first, second = api_server.received
    assert first.body == second.body


@pytest.mark.anyio
async def test_retries_exhausted_raise_the_last_attempts_error(
    api_server: MessagesAPIServer,
) -> None:
    for _ in range(2):
        api_server.reply(
            Canned(529, error_body("overloaded_error", "busy"), headers={"retry-after-ms": "1"})
        )
    async with open_model(api_server.base_url, max_retries=1) as model:
        with pytest.raises(ModelRateLimitedError) as caught:
            await model.complete(request([user("hi")]))

    assert caught.value.status == 529
    assert len(api_server.received) == 2


@pytest.mark.anyio
async def test_non_json_error_page_is_translated_with_a_snippet(
    api_server: MessagesAPIServer,
) -> None:
    api_server.reply(Canned(502, "<html><body>Bad Gateway from the proxy</body></html>"))
    async with open_model(api_server.base_url) as model:
        with pytest.raises(ModelUnavailableError) as caught:
            await model.complete(request([user("hi")]))

    assert caught.value.status == 502
    assert "Bad Gateway from the proxy" in caught.value.problem


@pytest.mark.anyio
async def test_connection_refused_is_unavailable_and_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port was free a moment ago and nothing listens on it now.
    async with open_model(f"http://127.0.0.1:{port}", max_retries=0) as model:
        with pytest.raises(ModelUnavailableError) as caught:
            await model.complete(request([user("hi")]))

    assert caught.value.retryable is True
    assert caught.value.status is None
    assert "connection failed" in caught.value.problem


@pytest.mark.anyio
async def test_timeout_is_unavailable_and_retryable(api_server: MessagesAPIServer) -> None:
    held = threading.Event()
    api_server.reply(Canned(200, message_body([{"type": "text", "text": "late"}]), hold=held))
    try:
        async with open_model(api_server.base_url, max_retries=0, timeout_s=0.2) as model:
            with pytest.raises(ModelUnavailableError) as caught:
                await model.complete(request([user("hi")]))
    finally:
        held.set()

    assert caught.value.retryable is True
    assert "timed out" in caught.value.problem


@pytest.mark.anyio
async def test_api_key_never_appears_in_error_text_or_logs(
    api_server: MessagesAPIServer, captured_logs: list[MutableMapping[str, object]]
) -> None:
    # A misbehaving endpoint echoes the key back, in the message and in the raw body.
    api_server.reply(
        Canned(401, error_body("authentication_error", f"invalid x-api-key: {API_KEY}"))
    )
    async with open_model(api_server.base_url) as model:
        with pytest.raises(ModelRequestError) as caught:
            await model.complete(request([user("hi")]))
        assert API_KEY not in repr(model)

    error = caught.value
    assert "invalid x-api-key: [redacted]" in str(error)
    for text in (str(error), repr(error), error.problem, repr(captured_logs)):
        assert API_KEY not in text
    # Raised ``from None``: no chained SDK exception whose message holds the raw body.
    assert error.__cause__ is None
    assert error.__suppress_context__ is True
    assert [entry["event"] for entry in captured_logs] == ["model_call_failed"]


@pytest.mark.anyio
async def test_successful_call_logs_model_call_with_tokens_and_latency(
    api_server: MessagesAPIServer, captured_logs: list[MutableMapping[str, object]]
) -> None:
    api_server.reply(
        Canned(
            200,
            message_body(
                [{"type": "text", "text": "ok"}],
                usage={"input_tokens": 12, "output_tokens": 34, "cache_read_input_tokens": 5},
            ),
        )
    )
    async with open_model(api_server.base_url) as model:
        await model.complete(request([user("hi")]))

    [entry] = captured_logs
    assert entry["event"] == "model_call"
    assert entry["model"] == MODEL
    assert entry["input_tokens"] == 12
    assert entry["output_tokens"] == 34
    assert entry["cache_read_input_tokens"] == 5
    latency_ms = entry["latency_ms"]
    assert isinstance(latency_ms, float) and latency_ms > 0
    assert API_KEY not in repr(captured_logs)


def test_empty_api_key_is_refused_rather_than_read_from_the_environment() -> None:
    with pytest.raises(ValueError, match="non-empty api_key"):
        AnthropicModel(api_key="", base_url="http://127.0.0.1:9", timeout=1.0, max_retries=0)
