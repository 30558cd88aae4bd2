"""The daemon's intake of approval decisions: the durable consumer of ``WARDEN_APPROVALS``.

A child of the daemon's root, started before the runs subtree: it first applies every
decision already in the stream (published while no daemon ran), then signals started, so
a resumed run that waits on a request finds a decision taken meanwhile in the journal
rather than expiring it. Then it applies each new decision as it comes.

Each message is judged once (``ApprovalBoard.apply``: signature, operator, id, hash,
pending, fresh), its outcome published on ``warden.approvals.<run>.outcome`` for the CLI
that waits on it, and only then acked: a daemon killed before the ack judges it again
after its restart, and a decision applied once is then refused as replayed (audited), so
a redelivery never applies twice.
"""

from __future__ import annotations

import anyio
import structlog
from anyio.abc import TaskStatus
from warden.bus import Bus, BusError, subjects
from warden.bus.decoding import InvalidMessage, decode
from warden.bus.wire import ApprovalOutcome, encoder, signed_decision_decoder
from warden.supervisor.approvals import ApprovalBoard

__all__ = ("DecisionIntake",)

log = structlog.get_logger("warden.approvals")

_MAX_DECISION_BYTES = 16 * 1024
_BATCH = 64
_DRAIN_WAIT_S = 1.0
"""How long a fetch at start waits for decisions the server says are stored."""
_WAIT_S = 5.0


class DecisionIntake:
    """Applies the operator's decisions to ``board``, from the stream."""

    def __init__(self, bus: Bus, board: ApprovalBoard) -> None:
        self.bus = bus
        self.board = board
        self.judged = 0

    @property
    def name(self) -> str:
        return "approvals"

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Drain the stream, signal started, then apply decisions until cancelled.
        Raises the bus's errors (a crash: the root restarts it)."""
        async with self.bus.decision_consumer() as consumer:
            while await consumer.stored():
                batch = await consumer.fetch(_BATCH, timeout=_DRAIN_WAIT_S)
                if not batch:
                    break  # delivered to a consumer that died: redelivered after ack_wait
                for message in batch:
                    await self._judge(message.subject, message.data, message.received_at)
                    await message.ack()
            task_status.started()
            while True:
                for message in await consumer.fetch(_BATCH, timeout=_WAIT_S):
                    await self._judge(message.subject, message.data, message.received_at)
                    await message.ack()

    async def _judge(self, subject: str, data: bytes, received_at: float) -> None:
        self.judged += 1
        run_id = subject.split(".")[2] if subject.count(".") == 3 else ""
        signed = decode(signed_decision_decoder, data, max_bytes=_MAX_DECISION_BYTES,
                        what="decision")
        if isinstance(signed, InvalidMessage):
            log.warning("approval_decision_refused", why=f"not a signed decision: "
                        f"{signed.problem}", subject=subject)
            await self.board.journal.record_event(
                run_id, "approval_refused", "unknown",
                f"refused: not a signed decision: {signed.problem}", None)
            outcome = ApprovalOutcome(id="?", nonce="", applied=False, status="unknown",
                                      reason=f"refused: not a signed decision: {signed.problem}")
        else:
            outcome = await self.board.apply(signed, received_at=received_at)
        if run_id and subjects.is_valid_id(run_id):
            try:
                await self.bus.publish(subjects.approval_outcome(run_id), encoder.encode(outcome))
            except BusError as exc:  # the CLI waits on it; the journal has it either way
                log.warning("approval_outcome_not_published", error=str(exc))
