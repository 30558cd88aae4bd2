"""JetStream, the durable path: the two streams, task intake and the event feed.

The functions here take nats-py's ``JetStreamContext``, which only ``bus/`` holds; the
rest of warden reaches them as methods of ``Bus`` (``bus.ensure_streams()``,
``bus.publish_task(...)``, ``bus.task_consumer()``, ``bus.follow(subject)``), which
delegate here. Every nats-py exception is translated by ``bus.errors.translate`` before
it leaves this module.

- ``ensure_streams`` creates or updates ``WARDEN_TASKS`` (work queue, ``Nats-Msg-Id``
  dedupe within ``duplicate_window``) and ``WARDEN_EVENTS`` (limits, 7 days).
- ``publish_task`` publishes a task with a ``Nats-Msg-Id`` for server-side dedupe and
  waits for the stream's ``PubAck``.
- ``task_consumer`` binds the durable pull consumer the daemon fetches tasks from
  (``TaskConsumer``), whose ``TaskMessage``\\ s are settled with exactly one of ``ack``,
  ``nak`` and ``term``.
- ``follow`` reads a run's events from the start with direct gets, then goes on live,
  woken by a core subscription to the run's subject. No consumer: a client that may
  create one chooses where JetStream delivers (any subject, across its publish
  permissions), so clients are given only ``$JS.API.DIRECT.GET.WARDEN_EVENTS``
  (``bus.identities``).

Nothing here is on the hot path: a task is published and fetched once per run, where a
run makes many core requests (``connection.py``).
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import anyio
import nats.errors
import nats.js.api as jsapi
import nats.js.errors
from warden.bus.errors import FAILURES, translate
from warden.bus.subjects import EVENTS_STREAM, EVENTS_WILDCARD, TASKS, TASKS_CONSUMER, TASKS_STREAM

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

__all__ = (
    "EVENTS_MAX_AGE",
    "MSG_ID_HEADER",
    "PubAck",
    "TaskConsumer",
    "TaskMessage",
    "TaskQueue",
    "ensure_stream_of",
    "ensure_streams",
    "follow",
    "publish_task",
    "task_consumer",
    "task_queue",
)

MSG_ID_HEADER = "Nats-Msg-Id"
"""The header JetStream deduplicates publishes by, within the stream's duplicate window."""
EVENTS_MAX_AGE = 7 * 24 * 3600.0
"""How long ``WARDEN_EVENTS`` keeps a run's events, in seconds."""

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_STREAM_CONFIG_CONFLICT = 10058  # JetStream err_code: stream exists with other config
_CLEANUP_TIMEOUT = 5.0  # how long leaving a consumer may take; as connection.py's teardown


@dataclass(frozen=True, slots=True)
class PubAck:
    """The stream's acknowledgement of a JetStream publish."""

    seq: int
    duplicate: bool


# -- tasks ------------------------------------------------------------------------------


class TaskMessage:
    """A task fetched from the ``WARDEN_TASKS`` stream; settle it with exactly one of
    ``ack``, ``nak`` or ``term``. A message not settled within ``ack_wait`` is redelivered.
    """

    __slots__ = ("_msg", "data", "headers", "msg_id", "num_delivered", "stream_seq")

    def __init__(self, msg: Msg) -> None:
        meta = msg.metadata
        self._msg = msg
        self.data: bytes = msg.data
        self.headers: Mapping[str, str] = msg.headers or _NO_HEADERS
        self.stream_seq: int = meta.sequence.stream
        self.num_delivered: int = meta.num_delivered
        self.msg_id: str | None = self.headers.get(MSG_ID_HEADER)

    def __repr__(self) -> str:
        return (
            f"TaskMessage(stream_seq={self.stream_seq}, num_delivered={self.num_delivered}, "
            f"msg_id={self.msg_id!r})"
        )

    async def ack(self, *, timeout: float = 5.0) -> None:
        """Acknowledge, and wait until the server confirms it (a double ack).

        Once this returns, the task is gone from the work queue and will not be
        redelivered. Raises ``BusTimeoutError`` if no confirmation came in ``timeout``,
        ``BusError`` if the message was already settled.
        """
        try:
            await self._msg.ack_sync(timeout=timeout)
        except FAILURES as exc:
            raise translate(exc, operation="ack task", subject=TASKS, timeout=timeout) from exc

    async def nak(self, delay: float | None = None) -> None:
        """Ask for redelivery, after ``delay`` seconds if given. Does not wait."""
        try:
            await self._msg.nak(delay=delay)
        except FAILURES as exc:
            raise translate(exc, operation="nak task", subject=TASKS) from exc

    async def term(self) -> None:
        """Give up on the task: it is never redelivered. Does not wait."""
        try:
            await self._msg.term()
        except FAILURES as exc:
            raise translate(exc, operation="term task", subject=TASKS) from exc


class TaskConsumer:
    """A durable pull consumer on ``WARDEN_TASKS``."""

    __slots__ = ("_psub", "durable")

    def __init__(self, durable: str, psub: JetStreamContext.PullSubscription) -> None:
        self.durable = durable
        self._psub = psub

    async def fetch(self, batch: int, timeout: float) -> list[TaskMessage]:
        """Fetch up to ``batch`` tasks, waiting at most ``timeout`` seconds for the first.

        Returns ``[]`` when none came in time (not an error). A cancellation point.
        ``timeout`` is sent to the server as the pull request's expiry, which is why it
        is a parameter and not the caller's cancel scope.
        """
        try:
            msgs = await self._psub.fetch(batch, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            # nats.js.errors.FetchTimeoutError is a nats TimeoutError; nats-py also lets a
            # bare asyncio.TimeoutError out of its pull loop when the server is slow to
            # answer (seen right after a restart with many redeliveries): none came in time.
            return []
        except FAILURES as exc:
            raise translate(exc, operation="fetch tasks", subject=TASKS, timeout=timeout) from exc
        return [TaskMessage(msg) for msg in msgs]


# -- event replay -----------------------------------------------------------------------

_FOLLOW_POLL = 0.25
"""Longest wait between direct gets while a followed subject is quiet: a core message
can reach the follower before the stream has stored it, so a wake-up that finds nothing
is retried, at the latest after this long."""


class _EventFeed:
    """Payloads stored on one subject of ``WARDEN_EVENTS``, oldest first, then live ones.

    Each payload comes from a direct get of the next stored message on the subject (so the
    order is the stream's and nothing repeats); a core subscription to the subject only
    wakes the feed when a new message may be there.
    """

    __slots__ = ("_js", "_next_seq", "_subject", "_woken")

    def __init__(self, js: JetStreamContext, subject: str, woken: anyio.Event) -> None:
        self._js = js
        self._subject = subject
        self._woken = woken
        self._next_seq = 1

    def __aiter__(self) -> _EventFeed:
        return self

    def wake(self) -> None:
        self._woken.set()

    async def __anext__(self) -> bytes:
        wait = 0.001
        while True:
            try:
                msg = await self._js.get_msg(EVENTS_STREAM, seq=self._next_seq,
                                             subject=self._subject, next=True, direct=True)
            except nats.js.errors.NotFoundError:
                with anyio.move_on_after(wait):
                    await self._woken.wait()
                if self._woken.is_set():
                    self._woken = anyio.Event()
                    wait = 0.001  # a message was published: it is stored very soon
                else:
                    wait = min(_FOLLOW_POLL, wait * 4)
                continue
            except FAILURES as exc:
                raise translate(exc, operation="follow", subject=self._subject) from exc
            self._next_seq = (msg.seq or self._next_seq) + 1
            return msg.data or b""


# -- operations -------------------------------------------------------------------------


async def ensure_streams(js: JetStreamContext, *, duplicate_window: float = 120.0) -> None:
    """Create or update ``WARDEN_TASKS`` and ``WARDEN_EVENTS``. Idempotent.

    Raises ``JetStreamError`` if a stream exists with a configuration that cannot be
    updated in place (e.g. another retention policy).
    """
    tasks = jsapi.StreamConfig(
        name=TASKS_STREAM,
        subjects=[TASKS],
        retention=jsapi.RetentionPolicy.WORK_QUEUE,
        storage=jsapi.StorageType.FILE,
        duplicate_window=duplicate_window,
    )
    events = jsapi.StreamConfig(
        name=EVENTS_STREAM,
        subjects=[EVENTS_WILDCARD],
        retention=jsapi.RetentionPolicy.LIMITS,
        storage=jsapi.StorageType.FILE,
        max_age=EVENTS_MAX_AGE,
        allow_direct=True,  # follow reads it with direct gets
    )
    for config in (tasks, events):
        await ensure_stream_of(js, config)


async def ensure_stream_of(js: JetStreamContext, config: jsapi.StreamConfig) -> None:
    """Create the stream ``config`` describes, or update it to that. Idempotent.
    Raises ``JetStreamError``."""
    try:
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_CONFIG_CONFLICT:
                raise
            await js.update_stream(config)
    except FAILURES as exc:
        raise translate(exc, operation="ensure stream", subject=config.name) from exc


async def publish_task(
    js: JetStreamContext, data: bytes, *, msg_id: str | None, timeout: float = 5.0
) -> PubAck:
    """Publish a task to the tasks stream and wait for the stream's ack.

    With ``msg_id``, the server drops a second publish of the same id within the
    stream's duplicate window and answers ``duplicate=True`` with the first's ``seq``.
    Raises ``PublishError`` (retryable) if no stream took it, ``BusTimeoutError``.
    """
    headers = {MSG_ID_HEADER: msg_id} if msg_id is not None else None
    try:
        ack = await js.publish(TASKS, data, timeout=timeout, stream=TASKS_STREAM, headers=headers)
    except FAILURES as exc:
        raise translate(exc, operation="publish task", subject=TASKS, timeout=timeout) from exc
    return PubAck(seq=ack.seq, duplicate=bool(ack.duplicate))


@contextlib.asynccontextmanager
async def task_consumer(
    js: JetStreamContext,
    *,
    durable: str = TASKS_CONSUMER,
    max_deliver: int = 5,
    ack_wait: float = 30.0,
) -> AsyncIterator[TaskConsumer]:
    """Bind to the durable pull consumer ``durable``, creating or updating it.

    The consumer (and its unacknowledged tasks) outlives the context and the process;
    only this client's subscription ends on exit. Raises ``JetStreamError`` if the
    stream is missing (call ``ensure_streams`` first).
    """
    config = jsapi.ConsumerConfig(
        name=durable,
        durable_name=durable,
        ack_policy=jsapi.AckPolicy.EXPLICIT,
        deliver_policy=jsapi.DeliverPolicy.ALL,
        max_deliver=max_deliver,
        ack_wait=ack_wait,
        filter_subject=TASKS,
    )
    try:
        # Without an action, CONSUMER.CREATE creates or updates (nats-server >= 2.10).
        await js.add_consumer(TASKS_STREAM, config)
        psub = await js.pull_subscribe_bind(durable=durable, stream=TASKS_STREAM)
    except FAILURES as exc:
        raise translate(exc, operation="bind task consumer", subject=TASKS_STREAM) from exc
    try:
        yield TaskConsumer(durable, psub)
    finally:
        await _unsubscribe_quietly(psub)


@contextlib.asynccontextmanager
async def follow(
    nc: Client, js: JetStreamContext, subject: str
) -> AsyncIterator[AsyncIterator[bytes]]:
    """Replay every stored event on ``subject`` from the start, then live ones.

    Reads ``WARDEN_EVENTS`` with direct gets (``$JS.API.DIRECT.GET.WARDEN_EVENTS``), so a
    follower that attaches late still sees the whole history, in the stream's order, and
    creates no consumer. The iterator blocks for the next event and is a cancellation
    point; a live event is seen at once, at worst ``_FOLLOW_POLL`` seconds late.
    """
    feed = _EventFeed(js, subject, anyio.Event())

    async def wake(msg: Msg) -> None:
        feed.wake()

    try:
        # Subscribed before the first get: whatever is published after it wakes the feed.
        sub = await nc.subscribe(subject, cb=wake)
    except FAILURES as exc:
        raise translate(exc, operation="follow", subject=subject) from exc
    try:
        yield feed
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT):
            with contextlib.suppress(*FAILURES):
                await sub.unsubscribe()


async def _unsubscribe_quietly(
    sub: JetStreamContext.PullSubscription | JetStreamContext.PushSubscription,
) -> None:
    # Shielded and bounded: leaving runs also on cancellation. The connection may already
    # be closed or draining; the interest dies with it then, so there is nothing to undo.
    with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT):
        with contextlib.suppress(*FAILURES):
            await sub.unsubscribe()


@dataclass(frozen=True, slots=True)
class TaskQueue:
    """The intake's backlog (``task_queue``), for the metrics."""

    pending: int
    """Tasks the consumer has not been delivered yet."""
    in_flight: int
    """Tasks delivered and not yet acknowledged."""
    oldest_age_s: float
    """Age of the oldest task still in ``WARDEN_TASKS`` (a work queue: not yet
    acknowledged), 0 when it is empty: how far intake lags behind submissions."""


async def task_queue(js: JetStreamContext, *, durable: str = TASKS_CONSUMER,
                     timeout: float = 1.0) -> TaskQueue:
    """The intake consumer's backlog: consumer info, then the stream's oldest message.

    A cancellation point; at most three JetStream API requests, each bounded by
    ``timeout``. Raises ``BusError`` subclasses (translated), ``BusTimeoutError`` included.
    """
    try:
        info = await js.consumer_info(TASKS_STREAM, durable, timeout=timeout)
        stream = await js.stream_info(TASKS_STREAM)
        age = 0.0
        if stream.state.messages:
            oldest = await js.get_msg(TASKS_STREAM, seq=stream.state.first_seq)
            if oldest.time is not None:
                now = datetime.datetime.now(tz=datetime.UTC)
                age = max(0.0, (now - oldest.time).total_seconds())
    except FAILURES as exc:
        raise translate(exc, operation="task queue info", subject=TASKS_STREAM,
                        timeout=timeout) from exc
    return TaskQueue(pending=int(info.num_pending or 0), in_flight=int(info.num_ack_pending or 0),
                     oldest_age_s=age)
