"""Dry runs: see what an agent *would* do without letting it (issue 10, point 5).

The spec:

- **Asking for one.** ``warden submit --dry-run``, or ``"dry_run": true`` in a
  ``TaskSubmission``. The run remembers it durably (``runs.dry_run`` in the journal), so a
  replay, a restarted daemon and ``warden resume`` go on as a dry run.
- **Its own keys.** A dry run's id is ``dry-<id>`` (``dry_run_id``; an id that already
  starts with ``dry-`` is kept, so the mapping can be applied twice), and a real run's id
  may not start with ``dry-`` (``RESERVED_PREFIX``). Every idempotency key, journal row,
  workspace and ledger line of a run starts with its id, so a dry run of a submission
  never shares any of them with the real run of the same submission, before or after it.
- **What is intercepted.** Every tool call of a dry run reaches the guards like a real
  one (``ToolCall.dry_run`` tells a guard it is one). ``DryRunGuard`` is the last guard
  (``policy.py``): a call of a tool declared ``side_effects`` that got past every guard
  before it is not executed; the guard records it (``dry_run_calls``: tool, arguments,
  the guards it passed) and answers it with a ``Substitute``: the tool's ``simulate``
  result when it has one (a ``ToolRequest`` in mode ``simulate``, run by a worker of the
  step's role like any call), else ``NOT_EXECUTED``. A call of a read-only tool runs.
- **Refusals.** A call that a guard (or the gate's allowlist) refused never reaches this
  guard; the run supervisor records it through the gate's ``refused`` hook
  (``record_refusal``) as ``refused``: a real run would have been refused there too.
- **Fail closed.** A dry run's side-effecting call that no guard answered (a chain
  without this guard, or a guard after it that allowed it) is refused by the gate
  itself, never made.
- **The model** is called as in a real run (a dry run costs tokens): it is the agent
  being watched.
- **Showing it.** ``warden show`` (and the API's ``show``) says the run was a dry run and
  lists its ``intercepted`` calls (``InterceptedCall``) in order.

A simulation that cannot be had (no worker answers, the hook raised) does not fail the
run: the model reads ``NOT_EXECUTED`` and why, and the record says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio
import structlog
from warden.actors.errors import UnknownToolError
from warden.actors.tools import ToolRegistry
from warden.bus import subjects
from warden.bus.wire import ToolCallRecord, ToolRequest
from warden.config import Risk
from warden.supervisor.dispatch import Dispatcher, DispatchError
from warden.supervisor.interceptors import ALLOW, Decision, ModelCall, Substitute, ToolCall
from warden.supervisor.journal import Journal

__all__ = (
    "NOT_EXECUTED",
    "RESERVED_PREFIX",
    "DryRunGuard",
    "dry_run_id",
    "record_refusal",
    "reserved_id_problem",
)

log = structlog.get_logger("warden.dry_run")

RESERVED_PREFIX = "dry-"
"""The prefix of every dry run's id, and of no real run's."""

NOT_EXECUTED = "dry run: not executed"
"""What the model reads for an intercepted call of a tool that cannot simulate."""


def dry_run_id(run_id: str) -> str:
    """The id of the dry run of a submission whose id is ``run_id``: ``dry-<run_id>``,
    or ``run_id`` itself when it already starts with ``dry-``. Pure; the result may be too
    long to be an id (``subjects.is_valid_id`` says so)."""
    return run_id if run_id.startswith(RESERVED_PREFIX) else RESERVED_PREFIX + run_id


def reserved_id_problem(run_id: str, *, dry_run: bool) -> str | None:
    """Why ``run_id`` cannot be the id of a run (dry or not), or ``None``. Pure."""
    if not dry_run and run_id.startswith(RESERVED_PREFIX):
        return (f"{run_id!r} starts with {RESERVED_PREFIX!r}, which only dry runs' ids do "
                "(submit it with dry_run, or choose another id)")
    if dry_run and len(run_id) > subjects.MAX_ID:
        return (f"{run_id[:40]!r}... is too long for a dry run: its id "
                f"{RESERVED_PREFIX!r} + id must be at most {subjects.MAX_ID} characters")
    return None


@dataclass(eq=False)
class DryRunGuard:
    """The last guard: intercepts a dry run's side-effecting tool calls (the module
    docstring is its contract). ``passed`` names the guards before it, which every call
    it sees has passed; ``dispatcher`` runs a tool's ``simulate`` hook on a worker (none:
    no simulation, every intercepted call reads ``NOT_EXECUTED``)."""

    tools: ToolRegistry
    journal: Journal
    dispatcher: Dispatcher | None = None
    passed: tuple[str, ...] = ()
    simulate_timeout_s: float = 60.0
    approval: Callable[[ToolCall], tuple[Risk, str | None]] | None = None
    """The approval guard's ``why``: a call that would have waited for a person is
    recorded as such (a dry run asks no one)."""
    name: str = "dry_run"

    async def on_model_call(self, run_id: str, call: ModelCall) -> Decision:
        return ALLOW

    async def on_tool_call(self, run_id: str, call: ToolCall) -> Decision:
        """Allow every call of a real run and every read-only call; intercept the rest:
        record it (waited for) and answer it. A cancellation point."""
        if not call.dry_run:
            return ALLOW
        try:
            declared = self.tools.declaration(call.name)
        except UnknownToolError:
            return ALLOW  # the gate refused it before any guard
        if not declared.side_effects:
            return ALLOW
        started = anyio.current_time()
        output, simulated = NOT_EXECUTED, False
        if declared.simulates and self.dispatcher is not None:
            output, simulated = await self._simulate(run_id, call)
        reason = ("passed every guard (" + ", ".join(self.passed) + ")" if self.passed
                  else "no guard before it refused it")
        if self.approval is not None:
            _, why = self.approval(call)
            if why is not None:
                reason += f"; would have waited for a person's approval: {why}"
        log.info("dry_run_intercepted", run_id=run_id, key=call.key, tool=call.name,
                 simulated=simulated)
        await self.journal.record_intercepted(
            run_id, key=call.key, step=call.step, turn=call.turn, tool=call.name,
            arguments=call.arguments, decision="intercepted", by=self.name, reason=reason,
            output=output, simulated=simulated,
        )
        return Substitute(ToolCallRecord(
            name=call.name, arguments=call.arguments, ok=True, output=output,
            duration_ms=(anyio.current_time() - started) * 1000.0,
        ))

    async def _simulate(self, run_id: str, call: ToolCall) -> tuple[str, bool]:
        """The tool's simulation of ``call`` and ``True``; or ``NOT_EXECUTED`` with why
        it could not be had and ``False``."""
        assert self.dispatcher is not None
        request = ToolRequest(
            run_id=run_id, step=call.step, role=call.role, call_index=call.turn,
            name=call.name, arguments=call.arguments, idempotency_key=call.key,
            mode="simulate", tool_call_id=call.use_id,
        )
        try:
            reply = await self.dispatcher.tool(request, wait_s=self.simulate_timeout_s)
        except DispatchError as exc:
            problem = exc.problem
        else:
            record = reply.record
            if reply.error is None and record is not None and record.ok:
                return record.output, True
            problem = reply.error or (record.output if record is not None else "no answer")
        log.warning("dry_run_simulate_failed", run_id=run_id, key=call.key, tool=call.name,
                    error=problem)
        return f"{NOT_EXECUTED} (its simulation failed: {problem})", False


async def record_refusal(journal: Journal, run_id: str, call: ToolCall,
                         record: ToolCallRecord, by: str | None) -> None:
    """Record that dry run ``run_id`` would have been refused at ``call`` (``by`` the
    guard that refused it; ``None``: the gate's allowlist or an unknown tool). The gate's
    ``refused`` hook of a dry run. A cancellation point."""
    await journal.record_intercepted(
        run_id, key=call.key, step=call.step, turn=call.turn, tool=call.name,
        arguments=call.arguments, decision="refused", by=by or "gate",
        reason=record.output, output=record.output,
    )
