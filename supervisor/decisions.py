"""Publishing an operator's decision on an approval request: the one way ``warden approve``,
``warden deny`` (``cli_approvals.py``) and the dashboard (``dashboard.py``) decide.

A decision names the request's id, run and hash, carries a fresh nonce, is signed with the
operator's nkey (``sign``: from a seed file for the CLI, from the seed held in the
dashboard's session), and is published to the ``WARDEN_APPROVALS`` stream. The daemon's
``DecisionIntake`` judges it like any other (``ApprovalBoard.apply``: signature, signer,
hash, replay, staleness; a refusal audited), and answers on
``warden.approvals.<run>.outcome``, which is awaited here, matched by the nonce.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Literal, NamedTuple

import anyio
from warden.bus import subjects
from warden.bus.connection import Bus
from warden.bus.wire import (
    ApprovalDecision,
    ApprovalInfo,
    ApprovalOutcome,
    SignedDecision,
    encoder,
    outcome_decoder,
)

__all__ = ("Decided", "Verdict", "decide")

Verdict = Literal["approve", "deny"]


class Decided(NamedTuple):
    """What became of a published decision: the daemon's ``outcome`` (``None``: none
    judged it within the wait; it stays in the stream) and the stream sequence."""

    outcome: ApprovalOutcome | None
    seq: int


async def decide(bus: Bus, request: ApprovalInfo, verdict: Verdict, reason: str,
                 sign: Callable[[ApprovalDecision], SignedDecision], *,
                 publish_timeout: float, outcome_timeout: float) -> Decided:
    """Sign and publish a decision on ``request``; wait up to ``outcome_timeout`` seconds
    for the daemon's outcome. A cancellation point. Raises what ``sign`` raises, and
    ``PublishError`` / ``BusTimeoutError`` when the stream does not take it."""
    decision = ApprovalDecision(
        id=request.id, run_id=request.run_id, hash=request.hash, verdict=verdict,
        reason=reason, issued_at=time.time(), nonce=secrets.token_hex(8))
    signed = sign(decision)
    async with bus.subscribe(subjects.approval_outcome(request.run_id)) as outcomes:
        ack = await bus.publish_decision(request.run_id, encoder.encode(signed),
                                         timeout=publish_timeout)
        with anyio.move_on_after(outcome_timeout):
            async for envelope in outcomes:
                outcome = outcome_decoder.decode(envelope.data)
                if outcome.nonce == decision.nonce:
                    return Decided(outcome, ack.seq)
    return Decided(None, ack.seq)
