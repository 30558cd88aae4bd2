"""The approval webhook sender: POST each approval notice to every configured webhook,
with retries, without ever holding up the run that asked.

The spec:

- ``notify(notice)`` never blocks and is not a cancellation point: it encodes the body
  once (``webhook_payload.encode_payload``) and puts it on each webhook's bounded
  in-memory queue. A full queue drops the notice *for that webhook* and says so
  (``webhook_queue_full``, a warning naming the approval): the approval itself is
  durable in the journal and listed by ``warden approvals``; only this message is lost.
- Each webhook has its own queue, served by its own task with at most ``max_in_flight``
  deliveries at once, so a webhook that is down delays no other webhook.
- One delivery is at most ``attempts`` POSTs. Each attempt is bounded by ``timeout_s``
  (connect to status line; the answer's body is never read) and signed afresh when the
  webhook has a secret. A 2xx delivers. Retried, after a full-jitter exponential backoff
  (``gate.full_jitter``): a connection error or timeout, a 5xx, and a 429, after its
  ``retry-after`` (seconds or an HTTP date) when it has one, capped at
  ``retry_after_cap_s``. Any other answer (4xx, a redirect: not followed) is final, and
  so is an error no retry repairs (``retryable_error``: a protocol the client cannot
  speak, an error of its own).
- Logged, with the approval id and the URL without query, user or password (a URL read
  from ``url_env`` as its origin only), never the secret: ``webhook_delivered``,
  ``webhook_retry`` (each failed attempt that is retried, with the error and the wait),
  ``webhook_failed`` (out of attempts), ``webhook_rejected`` (a final answer or error),
  ``webhook_queue_full``, ``webhook_undelivered`` (abandoned at shutdown).
- The sender's tasks live in a task group owned by ``open_webhook_sender``. On exit it
  takes no more notices, delivers what is queued and in flight for up to
  ``shutdown_timeout_s`` (shielded: a cancelled caller still gets the bounded drain),
  then cancels the rest and logs what was abandoned.

Delivery is at least once: a receiver that answered but whose answer was lost is sent
the notice again (the same ``X-Warden-Delivery`` id lets it tell).
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import anyio
import httpx2
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from warden.actors.retry_after import retry_after_s
from warden.bus.wire import ApprovalInfo
from warden.config import Risk
from warden.config.webhooks import WebhookSettings, check_webhooks, shown_url, webhook_url
from warden.supervisor.gate import full_jitter
from warden.supervisor.webhook_payload import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ApprovalNotice,
    approval_notice,
    encode_payload,
    sign,
)

__all__ = (
    "WebhookSender",
    "WebhookStatistics",
    "approval_notifier",
    "open_webhook_sender",
    "retryable_error",
)

log = structlog.get_logger("warden.webhooks")

_RETRYABLE: tuple[type[Exception], ...] = (
    httpx2.TimeoutException,      # connect, read, write, pool
    httpx2.NetworkError,          # refused, reset, unreachable, TLS handshake
    httpx2.RemoteProtocolError,   # the receiver hung up without a whole answer
    httpx2.ProxyError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class WebhookStatistics:
    """Counts since the sender opened, over every webhook (one notice to two webhooks
    is two deliveries)."""

    queued: int
    """Deliveries accepted by ``notify``."""
    delivered: int
    """Deliveries a webhook answered with a 2xx."""
    failed: int
    """Deliveries given up: out of attempts, or a final answer (4xx)."""
    dropped: int
    """Deliveries refused by ``notify``: a full queue, or the sender closed."""
    abandoned: int
    """Deliveries still queued or in flight when the shutdown bound ran out."""
    retries: int
    """Attempts after the first, over all deliveries."""


@dataclass(frozen=True, slots=True)
class _Item:
    run_id: str
    approval_id: str
    delivery_id: str
    body: bytes


@dataclass
class _Target:
    index: int
    hook: WebhookSettings
    url: str
    shown: str
    secret: bytes | None
    send: MemoryObjectSendStream[_Item]
    receive: MemoryObjectReceiveStream[_Item]
    pending: Counter[str] = field(default_factory=Counter)


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}"


def retryable_error(exc: Exception) -> bool:
    """Whether an attempt that raised ``exc`` may succeed if made again: a timeout, a
    network error, a receiver that hung up, a proxy's failure. Not: a URL or protocol
    the client cannot speak, an error of our own request, anything outside httpx2's
    tree. Pure."""
    return isinstance(exc, _RETRYABLE)


class WebhookSender:
    """Queues approval notices for the configured webhooks; made by
    ``open_webhook_sender``, which runs its delivery tasks."""

    def __init__(
        self, targets: list[_Target], client: httpx2.AsyncClient, *, max_in_flight: int,
        wall_clock: Callable[[], float],
    ) -> None:
        self._targets = targets
        self._client = client
        self._max_in_flight = max_in_flight
        self._wall_clock = wall_clock
        self._closed = False
        self._scope = anyio.CancelScope(shield=True)
        self._counts: Counter[str] = Counter()

    def notify(self, notice: ApprovalNotice) -> None:
        """Queue ``notice`` for every webhook and return at once. Does not block, is not
        a cancellation point, never raises for a webhook's sake: a full queue or a closed
        sender is logged (``webhook_queue_full``, ``webhook_sender_closed``) and counted
        in ``dropped``."""
        if not self._targets:
            return
        item = _Item(notice.run_id, notice.approval_id, uuid.uuid4().hex, encode_payload(notice))
        ids = {"run_id": notice.run_id, "approval_id": notice.approval_id}
        for target in self._targets:
            try:
                if self._closed:
                    raise anyio.ClosedResourceError
                target.send.send_nowait(item)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._counts["dropped"] += 1
                log.warning("webhook_sender_closed", **ids, url=target.shown)
                continue
            except anyio.WouldBlock:
                self._counts["dropped"] += 1
                log.warning("webhook_queue_full", **ids, url=target.shown,
                            queue_size=target.send.statistics().max_buffer_size,
                            note="not sent to this webhook; the approval is in the journal")
                continue
            target.pending[item.approval_id] += 1
            self._counts["queued"] += 1

    def statistics(self) -> WebhookStatistics:
        """The counts so far; does not block."""
        counts = self._counts
        return WebhookStatistics(
            queued=counts["queued"], delivered=counts["delivered"], failed=counts["failed"],
            dropped=counts["dropped"], abandoned=counts["abandoned"], retries=counts["retries"],
        )

    # -- the tasks ------------------------------------------------------------------------

    async def _serve_all(self, done: anyio.Event) -> None:
        # Shielded: a cancelled owner still gets its bounded drain; only the shutdown
        # stops the deliveries, by cancelling this scope when its bound runs out
        # (test_a_cancelled_owner_still_gets_the_bounded_drain).
        try:
            with self._scope:
                async with anyio.create_task_group() as tg:
                    for target in self._targets:
                        tg.start_soon(self._serve, target)
        finally:
            done.set()

    async def _serve(self, target: _Target) -> None:
        slots = anyio.Semaphore(self._max_in_flight)
        async with anyio.create_task_group() as deliveries, target.receive:
            async for item in target.receive:
                await slots.acquire()
                deliveries.start_soon(self._deliver, target, item, slots)

    async def _deliver(self, target: _Target, item: _Item, slots: anyio.Semaphore) -> None:
        try:
            await self._attempts(target, item)
        finally:
            slots.release()
            target.pending[item.approval_id] -= 1
            if target.pending[item.approval_id] <= 0:
                del target.pending[item.approval_id]

    async def _attempts(self, target: _Target, item: _Item) -> None:
        hook = target.hook
        # The run's ids are bound in the run's context, not in this task's: said here.
        fields = {"run_id": item.run_id, "approval_id": item.approval_id, "url": target.shown}
        for attempt in range(1, hook.attempts + 1):
            status, problem, retry_after, retryable = await self._post(target, item)
            if status is not None and 200 <= status < 300:
                self._counts["delivered"] += 1
                log.info("webhook_delivered", **fields, attempt=attempt, status=status)
                return
            if not retryable:
                self._counts["failed"] += 1
                log.warning("webhook_rejected", **fields, attempt=attempt, status=status,
                            error=problem)
                return
            if attempt == hook.attempts:
                self._counts["failed"] += 1
                log.warning("webhook_failed", **fields, attempts=attempt, error=problem)
                return
            wait = full_jitter(hook.retry_base_s, hook.retry_max_s, attempt - 1)
            if status == 429 and retry_after is not None:
                wait = min(retry_after, hook.retry_after_cap_s)
            self._counts["retries"] += 1
            log.info("webhook_retry", **fields, attempt=attempt, error=problem,
                     wait_s=round(wait, 3))
            await anyio.sleep(wait)

    async def _post(
        self, target: _Target, item: _Item,
    ) -> tuple[int | None, str, float | None, bool]:
        """One attempt: (status or ``None``, what went wrong, the retry-after wait,
        whether another attempt may do better). Never raises but a cancellation."""
        headers = {"content-type": "application/json", DELIVERY_HEADER: item.delivery_id}
        if target.secret is not None:
            timestamp = str(int(self._wall_clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(target.secret, timestamp, item.body)
        timeout = target.hook.timeout_s
        try:
            with anyio.fail_after(timeout):
                async with self._client.stream(
                    "POST", target.url, content=item.body, headers=headers, timeout=timeout,
                ) as response:
                    status = response.status_code
                    after = retry_after_s(response.headers.get("retry-after"),
                                          self._wall_clock())
        except TimeoutError:
            return None, f"no answer within {timeout:g} s", None, True
        except Exception as exc:
            # Whatever one attempt raises is that attempt's failure, never the daemon's.
            # An SDK message may quote the request's URL: never its query or credentials.
            said = str(exc).replace(target.url, target.shown)
            problem = f"{type(exc).__name__}: {said}" if said else type(exc).__name__
            return None, problem, None, retryable_error(exc)
        return status, f"HTTP {status}", after, status == 429 or status >= 500

    def _close(self) -> None:
        self._closed = True
        for target in self._targets:
            target.send.close()

    def _abandoned(self) -> None:
        for target in self._targets:
            ids = sorted(target.pending)
            if ids:
                count = sum(target.pending.values())
                self._counts["abandoned"] += count
                log.warning("webhook_undelivered", url=target.shown, deliveries=count,
                            approval_ids=ids, note="shutdown bound reached")


@asynccontextmanager
async def open_webhook_sender(
    webhooks: Sequence[WebhookSettings], *, environ: Mapping[str, str] | None = None,
    queue_size: int = 256, max_in_flight: int = 4, shutdown_timeout_s: float = 5.0,
    wall_clock: Callable[[], float] = time.time,
) -> AsyncIterator[WebhookSender]:
    """Run a sender for ``webhooks`` (URLs and secrets read from ``environ``,
    ``os.environ`` by default) for the ``async with`` block.

    Raises ``ConfigError`` (naming the key, ``approvals.webhooks[i]...``) when a webhook
    is not usable, before anything starts. On exit: no more notices, then what is queued
    and in flight is delivered for up to ``shutdown_timeout_s``, shielded from the
    caller's cancellation; then the rest is abandoned (``webhook_undelivered``). With no
    webhooks nothing runs and ``notify`` does nothing.
    """
    env = os.environ if environ is None else environ
    check_webhooks(webhooks, env)
    if queue_size < 1 or max_in_flight < 1:
        raise ValueError(f"queue_size {queue_size} and max_in_flight {max_in_flight} "
                         "must be at least 1")
    targets = []
    for index, hook in enumerate(webhooks):
        url = webhook_url(hook, env)
        shown = shown_url(url) if hook.url is not None else (
            f"{_origin(url)}/… (${hook.url_env})")
        secret = None if hook.secret_env is None else env[hook.secret_env].encode()
        send, receive = anyio.create_memory_object_stream[_Item](queue_size)
        targets.append(_Target(index, hook, url, shown, secret, send, receive))
    async with httpx2.AsyncClient(follow_redirects=False) as client:
        sender = WebhookSender(targets, client, max_in_flight=max_in_flight,
                               wall_clock=wall_clock)
        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender._serve_all, done)
            try:
                yield sender
            finally:
                sender._close()
                with anyio.CancelScope(shield=True), anyio.move_on_after(shutdown_timeout_s):
                    await done.wait()
                if not done.is_set():
                    sender._abandoned()
                    sender._scope.cancel()


def approval_notifier(sender: WebhookSender) -> Callable[[ApprovalInfo], Awaitable[None]]:
    """The approval board's ``notify`` hook: queue each new request for ``sender``'s
    webhooks (never waits for a delivery)."""

    async def notify(info: ApprovalInfo) -> None:
        sender.notify(approval_notice(
            approval_id=info.id, run_id=info.run_id, step=info.step, tool=info.tool,
            arguments=info.arguments, risk=cast(Risk, info.risk), why=info.why,
            hash=info.hash, created_at=info.created_at, expires_at=info.expires_at,
        ))

    return notify
