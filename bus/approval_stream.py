"""The approvals stream: the operator's signed decisions, durable until the daemon takes them.

- ``ensure_stream`` creates or updates ``WARDEN_APPROVALS`` (subjects
  ``warden.approvals.*.decision``, limits, file storage, 30 days): a decision published
  while no daemon runs waits there.
- ``publish_decision`` publishes one ``SignedDecision`` and waits for the stream's ack
  (only the operator identity may publish there: ``bus.identities``).
- ``decision_consumer`` binds the durable pull consumer ``approver`` the daemon fetches
  decisions from; each ``DecisionMessage`` carries the time the server stored it (what
  "published before the request expired" is judged by) and is acked once applied or
  refused (a decision is judged once: it is never redelivered after its ack).

Like ``jetstream.py``, every nats-py exception is translated before it leaves.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import nats.errors
import nats.js.api as jsapi
import nats.js.errors
from warden.bus.errors import FAILURES, translate
from warden.bus.jetstream import PubAck, _unsubscribe_quietly, ensure_stream_of
from warden.bus.subjects import (
    APPROVALS_CONSUMER,
    APPROVALS_STREAM,
    DECISIONS_WILDCARD,
    approval_decision,
)

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

__all__ = ("DecisionConsumer", "DecisionMessage", "decision_consumer", "ensure_stream",
           "publish_decision")

DECISIONS_MAX_AGE = 30 * 24 * 3600.0
"""How long ``WARDEN_APPROVALS`` keeps a decision, in seconds."""


class DecisionMessage:
    """One decision fetched from ``WARDEN_APPROVALS``; ``ack`` it once judged."""

    __slots__ = ("_msg", "data", "received_at", "subject")

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self.data: bytes = msg.data
        self.subject: str = msg.subject
        self.received_at: float = msg.metadata.timestamp.timestamp()
        """When the server stored it (Unix time)."""

    async def ack(self, *, timeout: float = 5.0) -> None:
        """Acknowledge and wait for the server's confirmation. Raises ``BusTimeoutError``,
        ``BusError``."""
        try:
            await self._msg.ack_sync(timeout=timeout)
        except FAILURES as exc:
            raise translate(exc, operation="ack decision", subject=self.subject,
                            timeout=timeout) from exc


class DecisionConsumer:
    """The durable pull consumer on ``WARDEN_APPROVALS``."""

    __slots__ = ("_psub",)

    def __init__(self, psub: JetStreamContext.PullSubscription) -> None:
        self._psub = psub

    async def stored(self) -> int:
        """Decisions in the stream not yet delivered to this consumer, plus those
        delivered and not acked (the server's count). A cancellation point."""
        try:
            info = await self._psub.consumer_info()
        except FAILURES as exc:
            raise translate(exc, operation="consumer info", subject=APPROVALS_STREAM) from exc
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def fetch(self, batch: int, timeout: float) -> list[DecisionMessage]:
        """Up to ``batch`` decisions, waiting at most ``timeout`` s for the first; ``[]``
        when none came. A cancellation point."""
        try:
            msgs = await self._psub.fetch(batch, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            return []
        except FAILURES as exc:
            raise translate(exc, operation="fetch decisions", subject=DECISIONS_WILDCARD,
                            timeout=timeout) from exc
        return [DecisionMessage(msg) for msg in msgs]


async def ensure_stream(js: JetStreamContext) -> None:
    """Create or update ``WARDEN_APPROVALS``. Idempotent. Raises ``JetStreamError``."""
    config = jsapi.StreamConfig(
        name=APPROVALS_STREAM, subjects=[DECISIONS_WILDCARD],
        retention=jsapi.RetentionPolicy.LIMITS, storage=jsapi.StorageType.FILE,
        max_age=DECISIONS_MAX_AGE,
    )
    await ensure_stream_of(js, config)


async def publish_decision(js: JetStreamContext, run_id: str, data: bytes, *,
                           timeout: float = 5.0) -> PubAck:
    """Publish a signed decision on ``warden.approvals.<run>.decision``; wait for the
    stream's ack. Raises ``PublishError`` (no stream took it: e.g. this identity may not
    publish there), ``BusTimeoutError``."""
    subject = approval_decision(run_id)
    try:
        ack = await js.publish(subject, data, timeout=timeout, stream=APPROVALS_STREAM)
    except FAILURES as exc:
        raise translate(exc, operation="publish decision", subject=subject,
                        timeout=timeout) from exc
    return PubAck(seq=ack.seq, duplicate=bool(ack.duplicate))


@contextlib.asynccontextmanager
async def decision_consumer(js: JetStreamContext, *, ack_wait: float = 30.0
                            ) -> AsyncIterator[DecisionConsumer]:
    """Bind the durable pull consumer ``approver``, creating or updating it; it outlives
    the context. Raises ``JetStreamError`` when the stream is missing."""
    config = jsapi.ConsumerConfig(
        name=APPROVALS_CONSUMER, durable_name=APPROVALS_CONSUMER,
        ack_policy=jsapi.AckPolicy.EXPLICIT, deliver_policy=jsapi.DeliverPolicy.ALL,
        ack_wait=ack_wait, filter_subject=DECISIONS_WILDCARD,
    )
    try:
        await js.add_consumer(APPROVALS_STREAM, config)
        psub = await js.pull_subscribe_bind(durable=APPROVALS_CONSUMER, stream=APPROVALS_STREAM)
    except FAILURES as exc:
        raise translate(exc, operation="bind decision consumer",
                        subject=APPROVALS_STREAM) from exc
    try:
        yield DecisionConsumer(psub)
    finally:
        await _unsubscribe_quietly(psub)
