"""JetStream against a real nats-server: the streams, task intake with dedupe, and
replaying a run's events, all through ``Bus`` (which delegates to ``bus/jetstream.py``)."""

from __future__ import annotations

import anyio
import nats
import pytest
from warden.bus import subjects
from warden.bus.connection import open_bus
from warden.bus.embedded import EmbeddedServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


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
