"""Replay: re-run a recorded run against its recorded model replies and tool outcomes, and
say whether it reaches the same decisions and result (issue 11, point 4).

The rules.

1. **The real run logic, the current config.** The run is driven by the real
   ``RunSupervisor``, call gate and policy guards (``policy_guards``, in the guard order),
   built from the settings given (the current config: that is what a replay checks), on a
   fresh journal in a temporary directory (a real SQLite file), never the recorded one.
2. **Recorded model** (``RecordedDispatcher.model``). Each model call is answered with
   the reply recorded under its idempotency key (the same key in the replay: the run id
   and epoch 0, then plan attempt, step, attempt and turn). Its request is journalled by
   the gate as in the recorded run, so a different prompt, system prompt, tool list or
   model shows in the comparison. A call that was never recorded is answered with a
   non-retryable error (the step fails) and reported.
3. **Recorded tools** (``RecordedDispatcher.tool``). A tool call the guards let through
   is answered with the recorded outcome under its key; nothing is ever executed (no
   side effect, no workspace, no sandbox). A call never recorded gets ``ok=False`` and
   is reported. Reconcile and simulate (dry run) requests are answered the same way.
4. **Recorded decisions.** The recorded approval requests are in the replay's journal
   before it starts, with their decisions, so a call that waited for a person gets the
   recorded decision at once; a call that now needs an approval no one recorded expires
   at once (it is not waited for) and is reported.
5. **Compared**: the plan, each model call's request, each tool call's arguments and
   decision (allowed, refused by which guard, failed), approvals and their decisions, a
   dry run's intercepted calls, each step's status and output, and the run's status,
   result and error (``recording.divergences``), earliest first.

Only runs that ended and were never resumed (epoch 0) are replayed: a resumed run's
steps span two epochs' keys (``ReplayError``). Retry backoffs are not slept (they decide
nothing).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import msgspec
from warden.actors.tools import ToolRegistry
from warden.bus.wire import (
    Block,
    Message,
    ToolCallRecord,
    ToolReply,
    ToolRequest,
    TurnReply,
    TurnRequest,
    Usage,
)
from warden.config import Risk, Settings
from warden.supervisor.approvals import ApprovalBoard
from warden.supervisor.context import RunContext
from warden.supervisor.errors import ReplayError
from warden.supervisor.interceptors import ToolCall
from warden.supervisor.journal import ApprovalRecord, Journal, open_journal
from warden.supervisor.journal_recording import read_recording
from warden.supervisor.policy import check_policy_names, policy_guards
from warden.supervisor.preflight import check_allowlists, expand_allowlists, open_tool_registry
from warden.supervisor.recording import (
    Divergence,
    RecordedModelCall,
    RecordedToolCall,
    Recording,
    divergences,
    location,
    position,
)
from warden.supervisor.run import RunSupervisor, state_of_new_run
from warden.supervisor.run_states import TERMINAL

__all__ = ("RecordedDispatcher", "ReplayReport", "replay", "replay_under", "replayable")

REPLAY_JOURNAL = "replay.sqlite"


@dataclass
class RecordedDispatcher:
    """A ``Dispatcher`` that answers from a recording and executes nothing (rules 2, 3).

    ``unrecorded`` gathers the calls that had no recorded answer, as divergences."""

    recording: Recording
    unrecorded: list[Divergence] = field(default_factory=list)
    _models: dict[str, RecordedModelCall] = field(init=False)
    _tools: dict[str, RecordedToolCall] = field(init=False)
    _plans: int = 0
    _attempts: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._models = {call.key: call for call in self.recording.model_calls}
        self._tools = {call.key: call for call in self.recording.tool_calls}

    def _model_key(self, request: TurnRequest) -> str:
        """The idempotency key of ``request``, as the run supervisor made it: the
        requests of one run come one at a time, in the run's order."""
        prefix = f"{request.run_id}/e0"
        if request.purpose == "plan":
            self._plans += 1
            return f"{prefix}/plan/a{self._plans - 1}"
        if request.purpose == "synthesize":
            return f"{prefix}/synth"
        if request.turn == 0:  # a step attempt begins
            self._attempts[request.step] = self._attempts.get(request.step, -1) + 1
        attempt = self._attempts.get(request.step, 0)
        return f"{prefix}/s{request.step}/a{attempt}/t{request.turn}"

    async def model(self, request: TurnRequest, *, wait_s: float) -> TurnReply:
        key = self._model_key(request)
        recorded = self._models.get(key)
        if recorded is None:
            self.unrecorded.append(Divergence(
                where=location(key), what=f"{request.purpose} model call",
                recorded="not made", replayed="made (no reply was recorded for it)",
                at=position(key)))
            return TurnReply(run_id=request.run_id, step=request.step, turn=request.turn,
                             error=f"replay: no model reply was recorded for {key!r}",
                             retryable=False, model=request.model)
        content = msgspec.convert(recorded.response, list[Block])
        return TurnReply(
            run_id=request.run_id, step=request.step, turn=request.turn,
            assistant=Message(role="assistant", content=content), model=recorded.model,
            usage=Usage(input_tokens=recorded.input_tokens,
                        output_tokens=recorded.output_tokens,
                        cache_creation_input_tokens=recorded.cache_creation_tokens,
                        cache_read_input_tokens=recorded.cache_read_tokens),
            latency_ms=recorded.latency_ms,
        )

    async def tool(self, request: ToolRequest, *, wait_s: float) -> ToolReply:
        key = request.idempotency_key
        recorded = self._tools.get(key)
        if recorded is None or recorded.ok is None:
            if request.mode == "reconcile":  # it did not act: nothing was recorded
                return ToolReply(run_id=request.run_id, idempotency_key=key)
            self.unrecorded.append(Divergence(
                where=location(key), what=f"tool call {request.name!r}",
                recorded="not made" if recorded is None else "no outcome",
                replayed="made (not executed: no outcome was recorded for it)",
                at=position(key)))
            record = ToolCallRecord(name=request.name, arguments=request.arguments,
                                    ok=False, output="replay: no outcome was recorded for "
                                    "this call; not executed", duration_ms=0.0)
            return ToolReply(run_id=request.run_id, idempotency_key=key, record=record)
        # The call as the replay made it, with the recorded outcome: the comparison sees
        # the replay's tool and arguments.
        record = ToolCallRecord(name=request.name, arguments=request.arguments,
                                ok=bool(recorded.ok), output=recorded.output,
                                duration_ms=recorded.duration_ms)
        return ToolReply(run_id=request.run_id, idempotency_key=key, record=record)


@dataclass(eq=False)
class _ReplayBoard(ApprovalBoard):
    """The approval board of a replay: remembers which requests the run made (the
    recorded ones are all in its journal from the start, asked or not)."""

    asked: set[str] = field(default_factory=set)

    async def request(self, run_id: str, call: ToolCall, risk: Risk, why: str
                      ) -> ApprovalRecord:
        self.asked.add(call.key)
        return await super().request(run_id, call, risk, why)


@dataclass(frozen=True)
class ReplayReport:
    """What a replay found: the two recordings and how they differ (earliest first)."""

    recorded: Recording
    replayed: Recording
    divergences: list[Divergence]

    @property
    def same(self) -> bool:
        return not self.divergences


def replayable(recording: Recording) -> None:
    """Return if ``recording`` can be replayed (rule: ended, never resumed); raises
    ``ReplayError`` saying why not. Pure."""
    run = recording.run
    if run.status not in TERMINAL:
        raise ReplayError(run.id, f"it has not ended (it is {run.status}); replay a run "
                                  "that ended")
    if run.epoch:
        raise ReplayError(run.id, f"it was resumed (epoch {run.epoch}); only runs that "
                                  "were never resumed can be replayed")


async def replay(recording: Recording, settings: Settings, tools: ToolRegistry, *,
                 workdir: Path, timeout_s: float = 60.0) -> ReplayReport:
    """Replay ``recording`` under ``settings`` (module docstring) in ``workdir`` (empty:
    its journal is made there), and compare. A cancellation point; bounded by
    ``timeout_s`` (``TimeoutError``). Raises ``ReplayError`` (``replayable``) and what
    the journal raises."""
    replayable(recording)
    run = recording.run
    limits = msgspec.structs.replace(settings.limits, retry_base_s=0.0, retry_max_s=0.0)
    settings = msgspec.structs.replace(settings, limits=limits, data_dir=str(workdir))
    dispatcher = RecordedDispatcher(recording)
    path = workdir / REPLAY_JOURNAL
    async with open_journal(path) as journal:
        board = _ReplayBoard(journal, 0.0)  # a request no decision was recorded for expires
        await _seed(journal, recording)
        ctx = RunContext.build(
            settings, journal, dispatcher, tools,
            interceptors=policy_guards(settings, tools, journal, dispatcher, board=board),
            approvals=board,
        )
        state = state_of_new_run(run.id, run.text, run.scenario, run.budget_usd,
                                 dry_run=run.dry_run)
        with anyio.fail_after(timeout_s):
            await RunSupervisor(ctx, state).run()
        await journal.sync()
    replayed = await anyio.to_thread.run_sync(read_recording, path, run.id)
    replayed = msgspec.structs.replace(
        replayed, approvals=[a for a in replayed.approvals if a.call_key in board.asked])
    found = sorted([*dispatcher.unrecorded, *divergences(recording, replayed)],
                   key=lambda d: d.at)
    return ReplayReport(recording, replayed, found)


async def replay_under(settings: Settings, recording: Recording, *, timeout_s: float
                       ) -> ReplayReport:
    """``replay`` with the tools ``settings`` configure (MCP servers are started to list
    their tools, then stopped: nothing is called), in a temporary directory removed
    afterwards. Raises ``ConfigError`` (an allowlist or a policy naming an unknown tool),
    ``ReplayError``, ``TimeoutError``."""
    replayable(recording)
    async with open_tool_registry(settings, keep_open=False) as tools:
        settings = expand_allowlists(settings, tools)
        check_allowlists(settings, tools)
        check_policy_names(settings, tools)
        with tempfile.TemporaryDirectory(prefix="warden-replay-") as workdir:
            return await replay(recording, settings, tools, workdir=Path(workdir),
                                timeout_s=timeout_s)


async def _seed(journal: Journal, recording: Recording) -> None:
    """The run, queued, and its recorded approval requests with their decisions."""
    run = recording.run
    await journal.create_run(run.id, text=run.text, status="queued", scenario=run.scenario,
                             budget_usd=run.budget_usd, dry_run=run.dry_run)
    now = time.time()
    for a in recording.approvals:
        await journal.record_approval(ApprovalRecord(
            id=a.id, run_id=run.id, step=a.step, call_key=a.call_key, tool=a.tool,
            arguments=a.arguments, risk=a.risk, why=a.why, hash=a.hash, created_at=now,
            expires_at=now, status=a.status, decided_by=a.decided_by, reason=a.reason,
            decided_at=now if a.status != "pending" else None,
        ))
