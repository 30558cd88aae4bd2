"""The bus against a real nats-server: core request/reply, mailboxes, JetStream."""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import nats
import pytest
from anyio.abc import TaskStatus
from structlog.testing import capture_logs
from warden.bus import subjects
from warden.bus.connection import Bus, Envelope, open_bus
from warden.bus.embedded import EmbeddedServer, open_embedded_server
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


# -- JetStream --------------------------------------------------------------------------


async def test_ensure_streams_is_idempotent_and_updates_the_duplicate_window(
    nats_server: EmbeddedServer,
) -> None:
    async with open_bus(nats_server.url) as bus:
        await bus.ensure_streams()
        await bus.ensure_streams()
        await bus.ensure_streams(duplicate_window=30.0)
    nc = await nats.connect(nats_server.url)
    try:
        tasks = await nc.jetstream().stream_info(subjects.TASKS_STREAM)
        events = await nc.jetstream().stream_info(subjects.EVENTS_STREAM)
    finally:
        await nc.close()
    assert tasks.config.duplicate_window == 30.0
    assert tasks.config.retention == nats.js.api.RetentionPolicy.WORK_QUEUE
    assert tasks.config.storage == nats.js.api.StorageType.FILE
    assert events.config.subjects == [subjects.EVENTS_WILDCARD]
    assert events.config.retention == nats.js.api.RetentionPolicy.LIMITS
    assert events.config.max_age == 7 * 24 * 3600


async def test_a_task_published_twice_with_one_msg_id_is_stored_and_fetched_once(
    nats_url: str,
) -> None:
    async with open_bus(nats_url) as bus:
        await bus.ensure_streams()
        first = await bus.publish_task(b'{"text": "hi"}', msg_id="r-1")
        second = await bus.publish_task(b'{"text": "hi"}', msg_id="r-1")
        async with bus.task_consumer() as consumer:
            fetched = await consumer.fetch(10, timeout=1.0)
            assert [(m.data, m.msg_id, m.stream_seq, m.num_delivered) for m in fetched] == [
                (b'{"text": "hi"}', "r-1", first.seq, 1)
            ]
            await fetched[0].ack()
            assert await consumer.fetch(10, timeout=0.3) == []
    assert not first.duplicate
    assert second.duplicate and second.seq == first.seq


async def test_tasks_without_msg_id_are_not_deduplicated(nats_url: str) -> None:
    async with open_bus(nats_url) as bus:
        await bus.ensure_streams()
        acks = [await bus.publish_task(b"t", msg_id=None) for _ in range(2)]
        async with bus.task_consumer() as consumer:
            fetched = await consumer.fetch(10, timeout=1.0)
    assert [a.duplicate for a in acks] == [False, False]
    assert [(m.msg_id, m.stream_seq) for m in fetched] == [(None, 1), (None, 2)]


async def test_fetch_on_an_empty_queue_returns_an_empty_list(nats_url: str) -> None:
    async with open_bus(nats_url) as bus:
        await bus.ensure_streams()
        async with bus.task_consumer() as consumer:
            assert await consumer.fetch(1, timeout=0.2) == []


async def test_a_nakd_task_is_redelivered_with_its_delivery_count_incremented(
    nats_url: str,
) -> None:
    async with open_bus(nats_url) as bus:
        await bus.ensure_streams()
        ack = await bus.publish_task(b"task", msg_id="r-2")
        async with bus.task_consumer() as consumer:
            [first] = await consumer.fetch(1, timeout=1.0)
            await first.nak()
            [again] = await consumer.fetch(1, timeout=2.0)
            assert (again.stream_seq, again.num_delivered) == (ack.seq, 2)
            await again.term()
            assert await consumer.fetch(1, timeout=0.3) == []


async def test_an_unacked_task_survives_the_consumer_and_is_redelivered(nats_url: str) -> None:
    async with open_bus(nats_url) as bus:
        await bus.ensure_streams()
        await bus.publish_task(b"task", msg_id="r-3")
        async with bus.task_consumer(ack_wait=0.5) as consumer:
            [first] = await consumer.fetch(1, timeout=1.0)
        async with bus.task_consumer(ack_wait=0.5) as consumer:
            [again] = await consumer.fetch(1, timeout=3.0)
            await again.ack()
    assert (first.msg_id, first.num_delivered) == ("r-3", 1)
    assert (again.msg_id, again.num_delivered) == ("r-3", 2)


async def test_follow_replays_events_published_before_it_attached_then_live_ones(
    nats_url: str,
) -> None:
    subject = subjects.run_events("r-1")
    async with open_bus(nats_url) as bus:
        await bus.ensure_streams()
        await bus.publish(subject, b"queued")
        await bus.publish(subjects.run_events("r-other"), b"not mine")
        await bus.publish(subject, b"running")
        async with bus.follow(subject) as events:
            with anyio.fail_after(5):
                seen = [await anext(events), await anext(events)]
                await bus.publish(subject, b"done")
                seen.append(await anext(events))
    assert seen == [b"queued", b"running", b"done"]


async def test_two_followers_each_see_the_whole_history(nats_url: str) -> None:
    subject = subjects.run_events("r-9")
    async with open_bus(nats_url) as bus:
        await bus.ensure_streams()
        for i in range(5):
            await bus.publish(subject, b"%d" % i)
        async with bus.follow(subject) as one, bus.follow(subject) as two:
            with anyio.fail_after(5):
                got_one = [await anext(one) for _ in range(5)]
                got_two = [await anext(two) for _ in range(5)]
    assert got_one == got_two == [b"%d" % i for i in range(5)]
