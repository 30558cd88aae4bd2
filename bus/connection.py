"""The bus: one NATS connection and its mailboxes (core NATS).

``open_bus(url)`` connects (retrying until ``connect_timeout``), reconnects forever with
exponential backoff once connected, and on exit drains then closes, bounded in time.
``Bus`` is the only object above ``bus/`` that talks to NATS; every nats-py exception is
translated by ``bus.errors.translate`` before it leaves this module.

Core NATS, the hot path (thousands of requests a second in the benchmark):

- ``publish`` / ``request`` / ``respond`` move ``bytes``; nothing is encoded here.
  ``publish`` and ``request`` carry NATS headers (trace context, for one), which
  ``Envelope.headers`` hands to ``serve`` and ``subscribe``; without headers, a message
  is the plain ``PUB`` it was before headers were accepted, at no extra cost.
- ``subscribe`` yields a ``Subscription``: an actor's mailbox, an async iterator of
  ``Envelope``. The mailbox is bounded: ``pending_limit`` messages in the client plus a
  small hand-off buffer; beyond that nats-py drops messages and ``bus_error`` is logged
  with a slow-consumer error.

JetStream, the durable path, lives in ``jetstream.py``; ``Bus`` reaches it through the
same connection with ``ensure_streams``, ``publish_task``, ``task_consumer`` and
``follow``, which delegate there.

Only asyncio is supported as the anyio backend: nats-py is written against asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import anyio
import msgspec
import nats
import nats.errors
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream
from warden.bus import approval_stream, jetstream, lease, service
from warden.bus.approval_stream import DecisionConsumer
from warden.bus.credentials import Credentials
from warden.bus.errors import FAILURES, BusConnectionError, translate
from warden.bus.jetstream import PubAck, TaskConsumer, TaskMessage
from warden.bus.lease import Lease
from warden.bus.service import ServiceIdentity
from warden.bus.subjects import TASKS_CONSUMER

if TYPE_CHECKING:
    from nats.aio.client import Client, Server
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription as NatsSubscription

# PubAck, TaskConsumer and TaskMessage are jetstream.py's; they are named here too because
# they were defined here first and are imported from here (supervisor/intake.py).
__all__ = (
    "Bus",
    "BusStatistics",
    "Envelope",
    "PubAck",
    "Subscription",
    "TaskConsumer",
    "TaskMessage",
    "open_bus",
)

log = structlog.get_logger(__name__)

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})
_HANDOFF_BUFFER = 128  # envelopes between nats-py's delivery task and the mailbox reader
_CLEANUP_TIMEOUT = 5.0
_STATUS_HEADER = "Status"  # how nats-py hands over a status line, e.g. 503: no responders
_NO_RESPONDERS = "503"
_REPLY_PENDING_LIMIT = 1_000_000  # replies waiting for the delivery task: one per request
_CONNECTION_DROPPED = "the connection dropped before the reply came"

_BACKOFF_FIRST = 0.1
_BACKOFF_CAP = 5.0


# -- records ----------------------------------------------------------------------------


class Envelope(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One message delivered to a mailbox. ``reply`` is ``""`` when none was asked for.

    ``headers`` are the NATS headers its sender gave ``publish`` or ``request`` (trace
    context, for one), read-only: a shared empty mapping when the message had none, which
    keeps this record free of per-message allocations beyond itself. ``gc=False`` is
    safe: an envelope holds only strings, bytes and a flat mapping, never a cycle.
    """

    subject: str
    data: bytes
    headers: Mapping[str, str]
    reply: str


@dataclass(frozen=True, slots=True)
class BusStatistics:
    """Counters of the connection since it was opened."""

    msgs_in: int
    msgs_out: int
    bytes_in: int
    bytes_out: int
    reconnects: int
    connected: bool


# -- mailboxes --------------------------------------------------------------------------


class Subscription:
    """An actor's mailbox: ``async for envelope in subscription``.

    Iteration blocks until a message arrives and ends when the subscription is closed
    (its ``subscribe`` context exited). It is a cancellation point only when it has to
    wait: a waiting envelope is returned without a checkpoint. That is deliberate: the
    checkpoint cut request/reply throughput about 4x (2k against 10k requests/s, 64
    concurrent requesters, one responder). A reader that never awaits anything else
    still yields at least every 128 messages, since the hand-off buffer refills only
    when nats-py's delivery task runs.
    """

    __slots__ = ("_receive", "queue", "subject")

    def __init__(
        self, subject: str, queue: str | None, receive: MemoryObjectReceiveStream[Envelope]
    ) -> None:
        self.subject = subject
        self.queue = queue
        self._receive = receive

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Envelope:
        try:
            try:
                return self._receive.receive_nowait()
            except anyio.WouldBlock:
                pass
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None


# -- the bus ----------------------------------------------------------------------------


class Bus:
    """A connection to NATS. Create it with ``open_bus``; not meant to be constructed."""

    __slots__ = ("_js", "_nc", "_next_token", "_replies", "_reply_prefix", "url")

    def __init__(self, url: str, nc: Client) -> None:
        self.url = url
        self._nc = nc
        self._js = nc.jetstream()
        # Requests: one wildcard subscription for every reply, a future per request.
        self._reply_prefix = nc.new_inbox() + "."
        self._replies: dict[str, asyncio.Future[bytes]] = {}
        self._next_token = itertools.count()

    async def _start_replies(self) -> None:
        async def on_reply(msg: Msg) -> None:
            waiter = self._replies.get(msg.subject[len(self._reply_prefix):])
            if waiter is None or waiter.done():
                return  # its request gave up (timeout, cancellation) meanwhile
            if msg.headers and msg.headers.get(_STATUS_HEADER) == _NO_RESPONDERS:
                waiter.set_exception(nats.errors.NoRespondersError())
            else:
                waiter.set_result(msg.data)

        await self._nc.subscribe(
            self._reply_prefix + "*", cb=on_reply, pending_msgs_limit=_REPLY_PENDING_LIMIT
        )

    def _fail_in_flight(self) -> None:
        # A reply to a request sent before a disconnect can never arrive (the reply
        # subscription's interest is re-sent on reconnect, but the responders' replies
        # went to the old connection): fail those requests now, not at their deadline.
        for waiter in self._replies.values():
            if not waiter.done():
                waiter.set_exception(
                    BusConnectionError(_CONNECTION_DROPPED, operation="request", retryable=True)
                )

    @property
    def max_payload(self) -> int:
        """The largest message the server takes, in bytes (its ``max_payload``, 1 MB by
        default), as the server announced it when we connected."""
        return int(self._nc.max_payload)

    @property
    def is_connected(self) -> bool:
        """Whether the connection is up right now (false while reconnecting)."""
        return self._nc.is_connected

    def statistics(self) -> BusStatistics:
        """A snapshot of the connection's counters."""
        stats = self._nc.stats
        return BusStatistics(
            msgs_in=stats["in_msgs"],
            msgs_out=stats["out_msgs"],
            bytes_in=stats["in_bytes"],
            bytes_out=stats["out_bytes"],
            reconnects=stats["reconnects"],
            connected=self._nc.is_connected,
        )

    # -- core NATS ----------------------------------------------------------------------

    async def publish(
        self, subject: str, data: bytes, *, headers: dict[str, str] | None = None
    ) -> None:
        """Publish ``data`` (with ``headers``, if given) on ``subject``; fire and forget.

        Buffers into the client's outbound buffer and returns; while reconnecting, that
        buffer fills and ``PublishError`` (retryable) is raised. Subscribers see
        ``headers`` in ``Envelope.headers``.
        """
        try:
            await self._nc.publish(subject, data, headers=headers)
        except FAILURES as exc:
            raise translate(exc, operation="publish", subject=subject) from exc

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """Send a request (with ``headers``, if given) and return the first reply's payload.

        A cancellation point. Raises ``BusTimeoutError`` after ``timeout`` seconds without
        a reply, ``NoRespondersError`` at once if nobody subscribes to ``subject``,
        ``BusConnectionError`` (retryable) as soon as the connection drops meanwhile, and
        ``PublishError`` for a subject or header the client refuses.

        The lean path of every hand-off to a worker: a future in a dict and a timer,
        where nats-py's ``request`` adds a NUID, ``wait_for`` and a done callback, and a
        cancel scope per request would be needed to fail it on a disconnect. ``headers``
        go to nats-py's ``publish`` as they are: ``None`` sends a plain ``PUB``, as before
        headers were accepted here; the responder sees them in ``Envelope.headers``.
        """
        token = str(next(self._next_token))
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes] = loop.create_future()
        self._replies[token] = waiter
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            await self._nc.publish(subject, data, reply=self._reply_prefix + token, headers=headers)
            return await waiter
        except BusConnectionError as exc:  # from _fail_in_flight, which knows no subject
            raise BusConnectionError(
                exc.reason, operation="request", subject=subject, retryable=True
            ) from None
        except FAILURES as exc:
            raise translate(exc, operation="request", subject=subject, timeout=timeout) from exc
        finally:
            timer.cancel()
            del self._replies[token]

    async def respond(self, envelope: Envelope, data: bytes) -> None:
        """Reply to ``envelope``; a no-op if its sender asked for no reply."""
        if envelope.reply:
            try:
                await self._nc.publish(envelope.reply, data)
            except FAILURES as exc:
                raise translate(exc, operation="respond", subject=envelope.subject) from exc

    @contextlib.asynccontextmanager
    async def subscribe(
        self, subject: str, *, queue: str | None = None, pending_limit: int = 65536
    ) -> AsyncIterator[Subscription]:
        """Subscribe to ``subject`` (in queue group ``queue``) for the context's duration.

        The yielded mailbox holds at most ``pending_limit`` undelivered messages (plus a
        hand-off buffer of 128); past that, messages are dropped and a slow-consumer
        ``bus_error`` is logged. Unsubscribes on exit, shielded from cancellation.
        """
        send, receive = anyio.create_memory_object_stream[Envelope](_HANDOFF_BUFFER)

        async def put(envelope: Envelope) -> None:
            # Runs in nats-py's per-subscription task. send_nowait first: send() would
            # checkpoint on every message. Awaiting only when the buffer is full is the
            # backpressure that lets the client-side pending limit do its job.
            try:
                try:
                    send.send_nowait(envelope)
                except anyio.WouldBlock:
                    await send.send(envelope)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the mailbox was closed while this message was in flight

        try:
            async with self.serve(subject, put, queue=queue, pending_limit=pending_limit):
                with receive:
                    yield Subscription(subject, queue, receive)
        finally:
            send.close()
            receive.close()  # when subscribing failed; a no-op otherwise

    @contextlib.asynccontextmanager
    async def serve(
        self, subject: str, handler: Callable[[Envelope], Awaitable[None]], *,
        queue: str | None = None, pending_limit: int = 65536,
    ) -> AsyncIterator[None]:
        """Call ``handler`` with each message on ``subject`` (in queue group ``queue``)
        for the context's duration, in nats-py's delivery task for the subscription.

        The lean path for actors: no hand-off through a mailbox stream. ``handler`` should
        return quickly (start a task for the work); while it awaits, later messages wait in
        the client's pending queue, at most ``pending_limit`` of them (past that they are
        dropped and a slow-consumer ``bus_error`` is logged). Unsubscribes on exit,
        shielded from cancellation.
        """

        async def deliver(msg: Msg) -> None:
            await handler(Envelope(subject=msg.subject, data=msg.data,
                                   headers=msg.headers or _NO_HEADERS, reply=msg.reply))

        try:
            sub = await self._nc.subscribe(
                subject, queue=queue or "", cb=deliver, pending_msgs_limit=pending_limit
            )
        except FAILURES as exc:
            raise translate(exc, operation="subscribe", subject=subject) from exc
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT):
                await _unsubscribe_quietly(sub)

    # -- JetStream (jetstream.py) --------------------------------------------------------

    async def ensure_streams(self, *, duplicate_window: float = 120.0) -> None:
        """Create or update ``WARDEN_TASKS``, ``WARDEN_EVENTS`` and ``WARDEN_APPROVALS``;
        idempotent.

        See ``jetstream.ensure_streams`` (raises ``JetStreamError``).
        """
        await jetstream.ensure_streams(self._js, duplicate_window=duplicate_window)
        await approval_stream.ensure_stream(self._js)

    async def publish_task(
        self, data: bytes, *, msg_id: str | None, timeout: float = 5.0
    ) -> PubAck:
        """Publish a task, deduplicated by ``msg_id``, and wait for the stream's ack.

        See ``jetstream.publish_task`` (raises ``PublishError``, ``BusTimeoutError``).
        """
        return await jetstream.publish_task(self._js, data, msg_id=msg_id, timeout=timeout)

    def task_consumer(
        self, *, durable: str = TASKS_CONSUMER, max_deliver: int = 5, ack_wait: float = 30.0
    ) -> AbstractAsyncContextManager[TaskConsumer]:
        """``async with bus.task_consumer() as consumer``: the durable pull consumer of
        tasks, created or updated. See ``jetstream.task_consumer``."""
        return jetstream.task_consumer(
            self._js, durable=durable, max_deliver=max_deliver, ack_wait=ack_wait
        )

    async def task_queue(self, *, timeout: float = 1.0) -> jetstream.TaskQueue:
        """The intake's backlog (tasks pending, in flight, the oldest one's age). See
        ``jetstream.task_queue``."""
        return await jetstream.task_queue(self._js, timeout=timeout)

    async def publish_decision(self, run_id: str, data: bytes, *, timeout: float = 5.0
                               ) -> PubAck:
        """Publish a signed approval decision and wait for the stream's ack. See
        ``approval_stream.publish_decision`` (raises ``PublishError``, ``BusTimeoutError``)."""
        return await approval_stream.publish_decision(self._js, run_id, data, timeout=timeout)

    def decision_consumer(self, *, ack_wait: float = 30.0
                          ) -> AbstractAsyncContextManager[DecisionConsumer]:
        """``async with bus.decision_consumer() as consumer``: the durable pull consumer of
        approval decisions. See ``approval_stream.decision_consumer``."""
        return approval_stream.decision_consumer(self._js, ack_wait=ack_wait)

    # -- services and leases (service.py, lease.py) -------------------------------------

    def service(
        self, *, name: str, version: str, description: str, metadata: Mapping[str, str],
        endpoints: Mapping[str, str], handler: Callable[[Envelope], Awaitable[None]],
    ) -> AbstractAsyncContextManager[str]:
        """``async with bus.service(...) as instance_id``: a ``nats.micro`` service whose
        endpoints (name → subject) call ``handler``; it answers with ``respond``.
        See ``service.open_service``."""
        return service.open_service(self._nc, name=name, version=version,
                                    description=description, metadata=metadata,
                                    endpoints=endpoints, handler=handler)

    async def discover(self, subject: str, *, timeout: float = 1.0) -> list[ServiceIdentity]:
        """Every service answering a ping on ``subject``. See ``service.discover``."""
        return await service.discover(self._nc, subject, timeout=timeout)

    async def lease(
        self, *, bucket: str, key: str, holder: str, note: str, ttl: float
    ) -> Lease:
        """The lease ``key`` in KV bucket ``bucket`` for ``holder`` (not yet acquired).
        See ``lease.open_lease``."""
        return await lease.open_lease(self._js, bucket=bucket, key=key, holder=holder,
                                      note=note, ttl=ttl)

    def follow(self, subject: str) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """``async with bus.follow(subject) as events``: every stored event on ``subject``
        from the start, then live ones. See ``jetstream.follow``."""
        return jetstream.follow(self._nc, self._js, subject)


async def _unsubscribe_quietly(sub: NatsSubscription) -> None:
    # On the way out the connection may already be closed or draining; the interest
    # dies with it then, so there is nothing left to undo.
    with contextlib.suppress(*FAILURES):
        await sub.unsubscribe()


# -- opening ----------------------------------------------------------------------------


def _reconnect_backoff(servers: list[Server], info: dict[str, object]) -> tuple[None, float]:
    # Exponential backoff with jitter on the failed attempts since the last success,
    # so a restarting server is not hammered by every warden process in lockstep.
    attempts = servers[0].reconnects if servers else 0
    delay = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2 ** min(attempts, 16))
    return None, delay * random.uniform(0.5, 1.0)


async def _on_error(exc: Exception) -> None:
    log.warning("bus_error", error=str(exc), error_type=type(exc).__name__)


class _RefusedError(Exception):
    """The first connection cannot succeed by retrying: the server refused the credentials,
    or TLS failed (a certificate that does not verify). Never escapes ``open_bus``."""


_CONNECT_FAILURES: tuple[type[BaseException], ...] = (_RefusedError, *FAILURES)


def _is_refusal(exc: BaseException) -> bool:
    # nats-py raises a plain nats.errors.Error("nats: 'Authorization Violation'") for a
    # refused CONNECT (AuthorizationError only for some paths); the text is the server's.
    return isinstance(exc, nats.errors.AuthorizationError) or (
        "authorization violation" in str(exc).lower()
    )


def _error_logger(
    nc: nats.NATS, buses: list[Bus], refused: list[BaseException], retries: list[Exception],
    url: str,
) -> Callable[[Exception], Awaitable[None]]:
    async def on_error(exc: Exception) -> None:
        if refused:
            # Closing after the refusal (a TLS alert again, say): already reported.
            log.debug("bus_error_after_refusal", error=str(exc), error_type=type(exc).__name__)
            return
        if not buses and not nc.is_connected and (
            _is_refusal(exc) or isinstance(exc, ssl.SSLError)
        ):
            # Refused while connecting: retrying cannot help. nats-py's first-connection
            # loop awaits this callback, so raising here ends it; open_bus turns it into
            # one error, instead of a warning per attempt until the deadline.
            refused.append(exc)
            raise _RefusedError from exc
        if buses or nc.is_connected:
            await _on_error(exc)
            return
        # Until the first connection, every retry fails the same way (a refused port:
        # twenty in 5 s): that is one line, the error raised at the deadline, not a
        # warning per retry. Pinned by test_a_refused_connection_is_one_line.
        retries[:] = [exc]
        log.debug("bus_connect_retry", url=url, error=str(exc))

    return on_error


def _disconnect_logger(
    nc: nats.NATS, buses: list[Bus]
) -> Callable[[], Awaitable[None]]:
    async def on_disconnected() -> None:
        for bus in buses:
            bus._fail_in_flight()
        # A drain or close on our way out also disconnects: only a loss is a warning.
        if nc.is_closed or nc.is_draining:
            log.debug("bus_disconnected", closing=True)
        else:
            log.warning("bus_disconnected")

    return on_disconnected


async def _on_reconnected() -> None:
    log.info("bus_reconnected")


async def _on_closed() -> None:
    log.info("bus_closed")


@contextlib.asynccontextmanager
async def open_bus(
    url: str, *, name: str = "warden", connect_timeout: float = 5.0,
    credentials: Credentials | None = None,
) -> AsyncIterator[Bus]:
    """Connect to NATS at ``url`` with ``credentials`` (none: anonymously); drain and
    close on exit.

    Retries the first connection until ``connect_timeout`` seconds have passed, then
    raises ``BusConnectionError`` (retryable) with the last retry's error; the retries
    are logged at debug only. A server that refuses the credentials ends the attempt at
    once: ``BusConnectionError`` (not retryable) naming ``url`` and the server's
    "authorization violation". A credential file that is missing or unusable raises
    ``CredentialsError`` before any connection is tried. Once connected, a lost
    connection is retried forever with exponential backoff (0.1 s doubling to 5 s,
    jittered) while publishes buffer. On exit, also on cancellation: drain (bounded by
    ``_CLEANUP_TIMEOUT``), then close.
    """
    options = (credentials or Credentials()).connect_options()
    nc = nats.NATS()
    buses: list[Bus] = []  # the one Bus of this connection, once made
    refused: list[BaseException] = []  # the server's refusal, seen by the error callback
    refusals: list[Exception] = []  # why the first connection is not made yet

    async def on_closed() -> None:
        if buses:  # a connection that never was is not news: the error raised says it
            await _on_closed()

    try:
        with anyio.fail_after(connect_timeout):
            # nats-py annotates these durations as int, but uses them as float seconds
            # (asyncio.wait_for, asyncio.sleep); whole seconds would be far too coarse.
            await nc.connect(
                url,
                name=name,
                connect_timeout=min(connect_timeout, 2.0),  # type: ignore[arg-type]
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,  # type: ignore[arg-type]  # first connection only
                reconnect_to_server_handler=_reconnect_backoff,
                ping_interval=30,
                drain_timeout=_CLEANUP_TIMEOUT,  # type: ignore[arg-type]
                error_cb=_error_logger(nc, buses, refused, refusals, url),
                disconnected_cb=_disconnect_logger(nc, buses),
                reconnected_cb=_on_reconnected,
                closed_cb=on_closed,
                **options,  # type: ignore[arg-type]
            )
    except _CONNECT_FAILURES as exc:
        await _close_quietly(nc)
        if refused and isinstance(refused[0], ssl.SSLError):
            raise BusConnectionError(
                f"TLS failed: {getattr(refused[0], 'reason', None) or refused[0]}",
                operation="connect", subject=url, retryable=False,
            ) from exc
        if refused or _is_refusal(exc):
            raise BusConnectionError(
                "authorization violation: the server refused "
                f"{(credentials or Credentials()).describe()}",
                operation="connect", subject=url, retryable=False,
            ) from exc
        if isinstance(exc, TimeoutError):
            why = f": {_reason(refusals[-1])}" if refusals else ""
            raise BusConnectionError(
                f"no connection within {connect_timeout:g}s{why}",
                operation="connect",
                subject=url,
                retryable=True,
            ) from exc
        raise translate(exc, operation="connect", subject=url) from exc
    except BaseException:
        await _close_quietly(nc)
        raise
    log.info("bus_connected", url=url, name=name)
    try:
        bus = Bus(url, nc)
        try:
            await bus._start_replies()
        except FAILURES as exc:
            raise translate(exc, operation="subscribe", subject=bus._reply_prefix) from exc
        buses.append(bus)
        yield bus
    finally:
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(_CLEANUP_TIMEOUT + 1.0):
                with contextlib.suppress(*FAILURES):
                    await nc.drain()
            await _close_quietly(nc)


def _reason(exc: Exception) -> str:
    """Why a connection attempt failed, the same on every event loop: the OS's words
    for an ``OSError`` ("Connection refused"), else the error's own message."""
    if isinstance(exc, OSError) and exc.errno:
        return f"{os.strerror(exc.errno)} (errno {exc.errno})"
    return str(exc) or type(exc).__name__


def _expire(waiter: asyncio.Future[bytes]) -> None:
    if not waiter.done():
        waiter.set_exception(nats.errors.TimeoutError())


async def _close_quietly(nc: Client) -> None:
    # Shielded, so no cancellation of ours can land inside; a CancelledError that comes out
    # of close() is nats-py's own (a task or future of its own, cancelled when the server
    # died mid-close) and would otherwise escape as if this task had been cancelled.
    with anyio.CancelScope(shield=True), anyio.move_on_after(_CLEANUP_TIMEOUT):
        with contextlib.suppress(*FAILURES, asyncio.CancelledError):
            if not nc.is_closed:
                await nc.close()
