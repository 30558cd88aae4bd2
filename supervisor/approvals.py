"""Approvals: the last guard of the call gate, and the one place decisions are applied.

The rules (the spec; README, "Approvals" and "Injection containment"):

1. **Who needs one** (``needs_approval``, pure). A tool's declared ``risk``: ``low``
   runs; ``medium`` runs when the role's ``auto_approve`` is ``medium``, else needs an
   approval; ``high`` always needs one. While the step attempt is *tainted*
   (``ToolCall.tainted_by``: it read output of a tool declared untrusted, or a file the
   run did not write), every ``medium`` and ``high`` call needs one, whatever the role
   allows, and the request's ``why`` names the output that tainted it.
2. **The request** is durable before anything waits on it: one journal row per call key
   (``approvals``), bound to ``approval_hash(run, call key, tool, canonical arguments)``,
   with ``expires_at = created_at + approvals.timeout_s``; then announced (published on
   ``warden.approvals.<run>``) and handed to ``notify`` (webhooks). The run waits
   (``Pause``: ``awaiting_approval``); other runs do not. A replay asks the guard again
   for the same call key: the request already in the journal is found and waited on (or
   its decision applied), never made twice.
3. **A decision** (``ApprovalBoard.apply``) is applied only if every check passes, in
   this order, and each refusal is audited (journal event ``approval_refused`` and a
   log line, with why): its signature checks out (``bus/signing.py``); its signer is
   the operator identity's public key; its id names a request the journal holds; its
   hash is that request's (the same run, call key, tool and arguments); the request is
   still ``pending`` (else: replayed); the decision reached the server before the
   request expired (else: stale). Applied: the request is ``approved`` or ``denied``,
   with the decider's key and reason; then the waiting call goes on.
4. **The verdict** the gate gets: approved → ``Allow`` (the call is made, once: the gate
   records it under its key); denied → ``Deny`` whose reason names the decider and their
   reason; expired → ``Deny("approval expired ...")``. ``approvals.on_deny`` and
   ``on_expiry`` choose between telling the model (``tell_model``: the step goes on) and
   stopping the run ``needs_human``.

Check-then-set is atomic: the board's state changes happen between awaits, in one event
loop, and the board's in-memory outcome is consulted before the journal's (which may lag
behind a write being committed).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, cast, get_args

import anyio
import msgspec
import structlog
from warden.actors.errors import UnknownToolError
from warden.actors.tools import ToolRegistry
from warden.bus.signing import open_signed
from warden.bus.wire import ApprovalInfo, ApprovalOutcome, SignedDecision
from warden.config import Risk, Settings
from warden.supervisor.guard_patterns import canonical_arguments
from warden.supervisor.interceptors import (
    ALLOW,
    Allow,
    Decision,
    Deny,
    ModelCall,
    Pause,
    Substitute,
    ToolCall,
)
from warden.supervisor.journal import ApprovalRecord, Journal

__all__ = (
    "EXPIRED",
    "ApprovalBoard",
    "ApprovalGuard",
    "ApprovalStatus",
    "approval_hash",
    "info_of",
    "needs_approval",
)

log = structlog.get_logger("warden.approvals")

EXPIRED = "approval expired"
"""How the reason of a call refused because its request expired begins (``trace_events``
tells an expiry from a denial by it)."""
ApprovalStatus = Literal["pending", "approved", "denied", "expired"]
"""A request's status: the one vocabulary of the journal's ``approvals.status``."""

_DECIDED_HELD = 4096
"""Outcomes the board keeps in memory (the journal keeps them all)."""

Announce = Callable[[ApprovalInfo], Awaitable[None]]
"""Publishes a new request for watchers (``warden.approvals.<run>``)."""
Notify = Callable[[ApprovalInfo], Awaitable[None]]
"""The webhook hook: told of every new request once it is durable. The run moves to
``awaiting_approval`` only after it returns, so it should hand the request on (a queue
its own sender drains) rather than deliver it. An exception it raises is logged, never
the run's failure."""


def approval_hash(run_id: str, call_key: str, tool: str, arguments: dict[str, object]) -> str:
    """``sha256`` (hex) of the run, the call key, the tool and the canonical arguments
    (``guard_patterns.canonical_arguments``), as one JSON array: what a decision names."""
    text = msgspec.json.encode([run_id, call_key, tool, canonical_arguments(arguments)])
    return hashlib.sha256(text).hexdigest()


def needs_approval(risk: Risk, auto_approve: str, tainted_by: str | None) -> str | None:
    """Why a call of ``risk`` needs a human's approval (rule 1), or ``None``. Pure."""
    if risk == "high":
        return "risk high: always needs an approval" + (
            f" (and the step is tainted by the output of {tainted_by})" if tainted_by else "")
    if risk == "medium":
        if tainted_by:
            return (f"risk medium while the step is tainted by the output of {tainted_by}, "
                    "which may carry someone else's instructions")
        if auto_approve != "medium":
            return f"risk medium above the role's auto_approve = {auto_approve!r}"
    return None


def info_of(record: ApprovalRecord) -> ApprovalInfo:
    """The wire form of a request (``approvals`` listing, ``warden.approvals.<run>``)."""
    return ApprovalInfo(
        id=record.id, run_id=record.run_id, step=record.step, call_key=record.call_key,
        tool=record.tool, arguments=record.arguments, risk=record.risk, why=record.why,
        hash=record.hash, created_at=record.created_at, expires_at=record.expires_at,
        status=record.status,
    )


def _status(text: str) -> ApprovalStatus:
    """A status read from the journal, checked against the vocabulary."""
    if text in get_args(ApprovalStatus):
        return cast(ApprovalStatus, text)
    raise ValueError(f"approval status {text!r} is not one of {get_args(ApprovalStatus)}")


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: ApprovalStatus
    decided_by: str
    reason: str


@dataclass(eq=False)
class ApprovalBoard:
    """The requests of one daemon: makes them, waits on them, applies decisions.

    ``operator_key`` is the public nkey whose signature a decision needs (``None``: no
    decision is ever applied; requests can only expire). ``clock`` is wall-clock time
    (expiry outlives the process); tests pass their own.
    """

    journal: Journal
    timeout_s: float
    operator_key: str | None = None
    clock: Callable[[], float] = time.time
    announce: Announce | None = None
    notify: Notify | None = None
    _waiters: dict[str, anyio.Event] = field(default_factory=dict)
    _decided: OrderedDict[str, _Outcome] = field(default_factory=OrderedDict)

    # -- requests -----------------------------------------------------------------------

    async def request(self, run_id: str, call: ToolCall, risk: Risk, why: str
                      ) -> ApprovalRecord:
        """The request of ``call``: the one the journal holds for its key (a replay), or
        a new one, committed, then announced and notified. A cancellation point."""
        found = await self.journal.approval_for_call(call.key)
        if found is not None:
            return found
        digest = approval_hash(run_id, call.key, call.name, call.arguments)
        now = self.clock()
        record = ApprovalRecord(
            id=f"ap-{digest[:16]}", run_id=run_id, step=call.step, call_key=call.key,
            tool=call.name, arguments=call.arguments, risk=risk, why=why, hash=digest,
            created_at=now, expires_at=now + self.timeout_s, status="pending",
        )
        await self.journal.record_approval(record)
        log.info("approval_requested", run_id=run_id, approval=record.id, tool=call.name,
                 key=call.key, risk=risk, why=why)
        info = info_of(record)
        for hook, name in ((self.announce, "announce"), (self.notify, "notify")):
            if hook is None:
                continue
            try:
                await hook(info)
            except Exception as exc:  # a watcher or webhook never fails the run
                log.warning("approval_hook_failed", hook=name, approval=record.id,
                            error=repr(exc))
        return record

    def waits(self, record: ApprovalRecord) -> bool:
        """Whether ``wait(record)`` would wait: no outcome yet and not expired (else it
        answers at once). Never blocks."""
        return self.settled(record) is None and record.expires_at > self.clock()

    def settled(self, record: ApprovalRecord) -> _Outcome | None:
        """The request's outcome if it has one (decided or expired in this process, or
        in the journal), else ``None``. Never blocks; does not look at the clock
        (``wait`` does)."""
        held = self._decided.get(record.id)
        if held is not None:
            return held
        status = _status(record.status)
        if status != "pending":
            return _Outcome(status, record.decided_by or "", record.reason or "")
        return None

    async def wait(self, record: ApprovalRecord) -> _Outcome:
        """Wait until the request is decided or expires; its outcome. A cancellation
        point (the request stays pending in the journal: a replay waits again)."""
        event = self._waiters.setdefault(record.id, anyio.Event())
        try:
            outcome = self.settled(record)  # after registering: no decision is missed
            if outcome is None:
                with anyio.move_on_after(max(0.0, record.expires_at - self.clock())):
                    await event.wait()
                outcome = self._decided.get(record.id)
            if outcome is None:
                outcome = _Outcome("expired", "warden",
                                   f"no decision within approvals.timeout_s = "
                                   f"{record.expires_at - record.created_at:g} s")
                self._remember(record.id, outcome)
                log.warning("approval_expired", run_id=record.run_id, approval=record.id)
            if record.status == "pending":
                await self._commit(record.id, outcome)
            return outcome
        finally:
            if self._waiters.get(record.id) is event and not event.is_set():
                del self._waiters[record.id]

    # -- decisions ----------------------------------------------------------------------

    async def apply(self, signed: SignedDecision, *, received_at: float | None = None
                    ) -> ApprovalOutcome:
        """Apply one published decision if every check of rule 3 passes; the outcome
        (applied, or refused and audited with why). ``received_at``: when the server
        took it (the stream's timestamp), so a decision published in time while the
        daemon was down still counts; else now. A cancellation point."""
        opened = open_signed(signed)
        if opened is None:
            return await self._refuse(None, "?", "", "refused: the signature does not check "
                                      "out (forged, altered, or not signed)")
        decision = opened.decision
        record = await self.journal.approval(decision.id)  # to audit it on its run
        if self.operator_key is None or opened.signer != self.operator_key:
            return await self._refuse(record, decision.id, decision.nonce,
                                      "refused: not signed by the operator identity")
        if record is None:
            return await self._refuse(None, decision.id, decision.nonce,
                                      f"refused: no approval request {decision.id!r}")
        if decision.hash != record.hash or decision.run_id != record.run_id:
            return await self._refuse(record, decision.id, decision.nonce,
                                      "refused: mismatched: the decision names another hash "
                                      "(other run, call, tool or arguments) than the request")
        outcome = self.settled(record)
        if outcome is not None:
            return await self._refuse(record, decision.id, decision.nonce,
                                      f"refused: replayed: the request is already "
                                      f"{outcome.status}")
        arrived = self.clock() if received_at is None else received_at
        if arrived >= record.expires_at:
            return await self._refuse(record, decision.id, decision.nonce,
                                      "refused: stale: the request had expired when the "
                                      "decision arrived")
        status: ApprovalStatus = "approved" if decision.verdict == "approve" else "denied"
        outcome = _Outcome(status, opened.signer, decision.reason)
        self._remember(record.id, outcome)  # before any await: a second decision is a replay
        await self._commit(record.id, outcome)
        log.info("approval_decided", run_id=record.run_id, approval=record.id, status=status,
                 decided_by=opened.signer, reason=decision.reason)
        event = self._waiters.get(record.id)
        if event is not None:
            event.set()
        return ApprovalOutcome(id=record.id, nonce=decision.nonce, applied=True,
                               status=status, reason=decision.reason)

    async def _refuse(self, record: ApprovalRecord | None, approval_id: str, nonce: str,
                      why: str) -> ApprovalOutcome:
        log.warning("approval_decision_refused", approval=approval_id, why=why,
                    run_id=None if record is None else record.run_id)
        held = None if record is None else self.settled(record)
        status = "unknown" if record is None else held.status if held else record.status
        await self.journal.record_event(
            "" if record is None else record.run_id, "approval_refused", status,
            f"decision on {approval_id!r} {why}", None)
        return ApprovalOutcome(id=approval_id, nonce=nonce, applied=False, status=status,
                               reason=why)

    def _remember(self, approval_id: str, outcome: _Outcome) -> None:
        self._decided[approval_id] = outcome
        while len(self._decided) > _DECIDED_HELD:
            self._decided.popitem(last=False)

    async def _commit(self, approval_id: str, outcome: _Outcome) -> None:
        with anyio.CancelScope(shield=True):
            await self.journal.decide_approval(
                approval_id, status=outcome.status, decided_by=outcome.decided_by,
                reason=outcome.reason, decided_at=self.clock())


@dataclass(eq=False)
class ApprovalGuard:
    """The approval guard: the last of the policy guards (``policy.py``)."""

    settings: Settings
    tools: ToolRegistry
    board: ApprovalBoard
    name: str = "approval"

    async def on_model_call(self, run_id: str, call: ModelCall) -> Decision:
        return ALLOW

    def why(self, call: ToolCall) -> tuple[Risk, str | None]:
        """The call's risk and why it needs a human's approval (``None``: it does not)."""
        try:
            risk = self.tools.declaration(call.name).risk
        except UnknownToolError:
            # The gate refuses a tool its registry lacks before any interceptor; one that
            # this guard's registry lacks (a mis-wired daemon) is treated as the riskiest.
            risk = "high"
        role = self.settings.roles.get(call.role)
        return risk, needs_approval(risk, role.auto_approve if role else "low",
                                    call.tainted_by)

    async def on_tool_call(self, run_id: str, call: ToolCall) -> Decision:
        risk, why = self.why(call)
        if why is None or call.dry_run:
            # A dry run acts on nothing, so it asks no one: the dry-run guard after this
            # one records that the call would have needed an approval, and why.
            return ALLOW
        record = await self.board.request(run_id, call, risk, why)
        if not self.board.waits(record):
            # Decided (while the run was not waiting: a replay), or expired meanwhile.
            return self._verdict(record, await self.board.wait(record))

        async def decide() -> Allow | Deny | Substitute:
            return self._verdict(record, await self.board.wait(record))

        return Pause(f"approval {record.id} of {call.name!r} ({risk}): {why}", decide)

    def _verdict(self, record: ApprovalRecord, outcome: _Outcome) -> Allow | Deny:
        approvals = self.settings.approvals
        match outcome.status:
            case "approved":
                return ALLOW
            case "denied":
                reason = outcome.reason or "no reason given"
                return Deny(f"approval {record.id} denied by {outcome.decided_by}: {reason}; "
                            "not called",
                            ends_run="needs_human" if approvals.on_deny == "needs_human"
                            else None)
            case _:
                return Deny(f"{EXPIRED}: request {record.id} of {record.tool!r} had no "
                            f"decision in time ({outcome.reason}); not called",
                            ends_run="needs_human" if approvals.on_expiry == "needs_human"
                            else None)
