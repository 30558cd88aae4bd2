"""The bus against a real nats-server: core request/reply, headers, mailboxes, reconnects."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus
from structlog.testing import capture_logs
from warden.bus import subjects
from warden.bus.connection import Bus, Envelope, open_bus
from warden.bus.embedded import open_embedded_server
from warden.bus.errors import BusConnectionError, BusTimeoutError, NoRespondersError

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ECHO = "test.echo"


async def _echo(
    bus: Bus, name: str, handled: dict[str, int], *, task_status: TaskStatus[None]
) -> None:
    async with bus.subscribe(ECHO, queue=subjects.WORK_QUEUE_GROUP) as mailbox:
        task_status.started()
        async for envelope in mailbox:
            handled[name] += 1
            await bus.respond(envelope, name.encode() + b":" + envelope.data)


# -- core NATS --------------------------------------------------------------------------


async def test_requests_to_a_queue_group_are_each_answered_by_one_member(nats_url: str) -> None:
    handled = {"a": 0, "b": 0}
    async with open_bus(nats_url) as bus, anyio.create_task_group() as tg:
        await tg.start(_echo, bus, "a", handled)
        await tg.start(_echo, bus, "b", handled)
        replies = [await bus.request(ECHO, b"%d" % i, timeout=5) for i in range(40)]
        tg.cancel_scope.cancel()
    assert [r.split(b":")[1] for r in replies] == [b"%d" % i for i in range(40)]
    assert {r.split(b":")[0] for r in replies} <= {b"a", b"b"}
    assert handled["a"] + handled["b"] == 40  # not 80: one member per request


async def test_a_mailbox_yields_envelopes_with_subject_data_and_headers(nats_url: str) -> None:
    async with open_bus(nats_url) as bus, bus.subscribe("test.mailbox.*") as mailbox:
        await bus.publish("test.mailbox.one", b"1", headers={"X-Run": "r-1"})
        await bus.publish("test.mailbox.two", b"2")
        with anyio.fail_after(5):
            first = await anext(mailbox)
            second = await anext(mailbox)
    assert first == Envelope(
        subject="test.mailbox.one", data=b"1", headers={"X-Run": "r-1"}, reply=""
    )
    assert (second.subject, second.data, dict(second.headers), second.reply) == (
        "test.mailbox.two",
        b"2",
        {},
        "",
    )


TRACEPARENT = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


async def test_a_request_carries_its_headers_to_the_handler_that_serves_it(
    nats_url: str,
) -> None:
    seen: list[Envelope] = []
    async with open_bus(nats_url, name="worker") as worker:

        async def answer(envelope: Envelope) -> None:
            seen.append(envelope)
            await worker.respond(envelope, b"ok")

        async with worker.serve("test.traced", answer), open_bus(nats_url) as parent:
            traced = await parent.request("test.traced", b"1", timeout=5, headers=TRACEPARENT)
            plain = await parent.request("test.traced", b"2", timeout=5)
    assert (traced, plain) == (b"ok", b"ok")
    assert [(e.data, dict(e.headers)) for e in seen] == [(b"1", TRACEPARENT), (b"2", {})]


async def test_a_request_carries_its_headers_into_a_mailbox(nats_url: str) -> None:
    async with open_bus(nats_url) as bus, bus.subscribe("test.traced.mailbox") as mailbox:

        async def echo_the_traceparent() -> None:
            envelope = await anext(mailbox)
            await bus.respond(envelope, envelope.headers["traceparent"].encode())

        async with anyio.create_task_group() as tg:
            tg.start_soon(echo_the_traceparent)
            reply = await bus.request(
                "test.traced.mailbox", b"?", timeout=5, headers=TRACEPARENT
            )
    assert reply == TRACEPARENT["traceparent"].encode()


async def test_a_request_in_flight_fails_as_soon_as_the_connection_drops(
    tmp_path: Path,
) -> None:
    server_context = open_embedded_server(tmp_path / "nats-data")
    server = await server_context.__aenter__()
    stopped = False
    received = anyio.Event()

    async def hold(envelope: Envelope) -> None:
        received.set()  # and never answers

    async def stop_the_server_once_received() -> None:
        nonlocal stopped
        await received.wait()
        stopped = True
        await server_context.__aexit__(None, None, None)

    try:
        async with open_bus(server.url) as bus, bus.serve("test.held", hold):
            # Far below the request's own timeout: it fails on the disconnect, not then.
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(stop_the_server_once_received)
                    with pytest.raises(BusConnectionError) as caught:
                        await bus.request("test.held", b"?", timeout=60)
    finally:
        if not stopped:
            await server_context.__aexit__(None, None, None)
    assert caught.value.retryable
    assert caught.value.subject == "test.held"
    assert str(caught.value) == (
        "request on 'test.held' failed: the connection dropped before the reply came"
    )


async def test_a_mailbox_ends_its_iteration_when_its_context_exits(nats_url: str) -> None:
    async with open_bus(nats_url) as bus:
        async with bus.subscribe("test.closing") as mailbox:
            pass
        with anyio.fail_after(5):
            assert [e async for e in mailbox] == []


async def test_a_request_nobody_answers_raises_a_retryable_timeout(nats_url: str) -> None:
    async with open_bus(nats_url) as bus, bus.subscribe("test.silent"):
        with pytest.raises(BusTimeoutError) as caught:
            await bus.request("test.silent", b"?", timeout=0.2)
    assert caught.value.retryable
    assert caught.value.subject == "test.silent"
    assert caught.value.timeout == 0.2


async def test_a_request_without_subscribers_raises_no_responders_at_once(nats_url: str) -> None:
    async with open_bus(nats_url) as bus:
        with anyio.fail_after(2), pytest.raises(NoRespondersError) as caught:
            await bus.request("test.nobody", b"?", timeout=10)
    assert caught.value.subject == "test.nobody"
    assert "'test.nobody'" in str(caught.value)


async def test_responding_to_a_message_without_reply_subject_does_nothing(nats_url: str) -> None:
    async with open_bus(nats_url) as bus:
        before = bus.statistics().msgs_out
        await bus.respond(Envelope(subject="x", data=b"", headers={}, reply=""), b"ignored")
        assert bus.statistics().msgs_out == before


async def test_messages_published_just_before_exit_are_delivered_by_the_drain(
    nats_url: str,
) -> None:
    async with open_bus(nats_url, name="receiver") as receiver:
        async with receiver.subscribe("test.drain") as mailbox:
            async with open_bus(nats_url, name="sender") as sender:
                for i in range(200):
                    await sender.publish("test.drain", b"%d" % i)
            with anyio.fail_after(5):
                got = [(await anext(mailbox)).data for _ in range(200)]
    assert got == [b"%d" % i for i in range(200)]


async def test_statistics_count_traffic_and_connection_state(nats_url: str) -> None:
    async with open_bus(nats_url) as bus:
        assert bus.is_connected
        assert bus.url == nats_url
        await bus.publish("test.stats", b"abc")
        stats = bus.statistics()
    assert stats.msgs_out >= 1 and stats.bytes_out >= 3
    assert stats.reconnects == 0 and stats.connected
    assert not bus.is_connected


async def test_connecting_where_no_server_listens_fails_within_the_timeout() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with anyio.fail_after(5), pytest.raises(BusConnectionError) as caught:
        async with open_bus(f"nats://127.0.0.1:{port}", connect_timeout=0.5):
            pytest.fail("connected to nothing")
    assert caught.value.retryable


async def test_a_refused_connection_is_one_error_naming_why_and_no_warning_per_retry() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with capture_logs() as logs, pytest.raises(BusConnectionError) as caught:
        async with open_bus(f"nats://127.0.0.1:{port}", connect_timeout=1.0):
            pytest.fail("connected to nothing")
    assert "refused" in str(caught.value).lower()
    retries = [e for e in logs if e["event"] == "bus_connect_retry"]
    assert len(retries) >= 2  # it did retry, quietly
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == []


async def test_the_bus_reconnects_after_the_server_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "nats-data"
    first_server = open_embedded_server(data_dir)
    first = await first_server.__aenter__()
    stopped = False
    try:
        with capture_logs() as logs:
            async with open_bus(first.url) as bus:
                stopped = True
                await first_server.__aexit__(None, None, None)
                async with open_embedded_server(data_dir, port=first.port):
                    with anyio.fail_after(10):
                        # Polled with a deadline: nats-py offers no awaitable for this.
                        while bus.statistics().reconnects < 1 or not bus.is_connected:  # noqa: ASYNC110
                            await anyio.sleep(0.01)
                    async with bus.subscribe("test.again") as mailbox:
                        await bus.publish("test.again", b"hi")
                        with anyio.fail_after(5):
                            assert (await anext(mailbox)).data == b"hi"
                # Leaving while the server is gone again: bounded, not stuck reconnecting.
    finally:
        if not stopped:
            await first_server.__aexit__(None, None, None)
    events = [e["event"] for e in logs]
    assert "bus_disconnected" in events
    assert "bus_reconnected" in events


async def test_closing_survives_a_cancelled_error_raised_by_the_client_itself() -> None:
    # nats-py's close() awaits tasks and futures of its own; when the server dies mid-close
    # one of them may be cancelled, and its CancelledError comes out of close(). Closing must
    # not pass that on as if the caller had been cancelled (the chaos test's flake).
    from warden.bus.connection import _close_quietly

    class DyingClient:
        is_closed = False
        closes = 0

        async def close(self) -> None:
            self.closes += 1
            raise asyncio.CancelledError("a task of the client's own")

    client = DyingClient()
    with anyio.fail_after(5):
        await _close_quietly(client)  # type: ignore[arg-type]
        await anyio.lowlevel.checkpoint()  # still running, not cancelled
    assert client.closes == 1
