"""The per-run supervisor: plan → steps → evaluate → synthesize, under the parent's limits,
journalled so that a replay after any crash repeats no call and no side effect.

One ``RunSupervisor`` drives one run. It owns every loop, so every limit is enforced by
the parent, never trusted to a worker:

- **plan**: a model call returning ``{"steps": [{"role", "instruction"}]}``, validated
  (JSON, known roles, at least one step, at most ``max_steps_per_run``); an invalid plan
  is retried with the validation error (``plan_attempts`` in all), then the run fails.
- **steps**: each step is driven turn by turn. A turn is one model call made by a worker
  of the step's role (``TurnRequest``), then each tool the model asked for, run by a
  worker (``ToolRequest``). The step ends when the model answers without asking for
  tools. At ``max_turns_per_step`` turns the step is stopped whatever the model asks
  (``StepCapReachedError``) and the run ends ``degraded`` with its partial results.
  Steps per run (retries included) and per worker are capped the same way.
- **budget**: before every model call its worst-case cost is reserved from the run's
  budget; a call that could exceed it is not made and the run ends ``budget_exhausted``.
- **breakers and transport**: one breaker per worker role, shared by all runs. An open
  breaker, an unreachable worker or a lost connection is waited out (with backoff) for
  up to ``transport_patience_s``; past that the step has failed.
- **evaluate**: a step failed if its worker failed or its answer starts with ``FAIL``;
  it is retried up to ``step_retries`` times with the failure as feedback, after a
  full-jitter exponential backoff; then its role's ``on_failure`` decides: ``fail`` the
  run, ``skip`` the step, or ``escalate`` (``needs_human``).
- **synthesize**: a final model call over the step outputs gives the run's result.

Durability. Every model call and tool call has an idempotency key derived from
``(run, epoch, step, attempt, turn, call)``. Model replies are journalled under their key;
a side-effecting tool call commits its *intent* before it acts and its *outcome* after.
Resuming a run (after a crash of the daemon or of this supervisor) replays this same code:
a completed step is taken from the journal, a recorded reply or outcome is reused instead
of calling again, and an intent with no outcome is resolved by the tool's ``reconcile``
hook, re-run when the tool is idempotent by key, and otherwise escalated (``needs_human``)
rather than guessed. ``warden resume`` starts a new *epoch*, so the failed step runs
afresh under new keys while completed steps stay done.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
import msgspec
import structlog
from warden.actors.model import Model, ModelRequest, Purpose
from warden.actors.pricing import PriceTable
from warden.actors.tools import ToolRegistry
from warden.bus import subjects
from warden.bus.connection import Bus
from warden.bus.errors import BusConnectionError, BusError, NoRespondersError
from warden.bus.wire import (
    Block,
    Message,
    RunEvent,
    TextBlock,
    ToolCallRecord,
    ToolReply,
    ToolRequest,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    TurnReply,
    TurnRequest,
    Usage,
    encoder,
    tool_reply_decoder,
    turn_reply_decoder,
)
from warden.config import Settings
from warden.config.crashpoints import crash_point
from warden.supervisor.breaker import CircuitBreaker
from warden.supervisor.budget import Budget
from warden.supervisor.errors import (
    BreakerOpenError,
    BudgetExhaustedError,
    PlanInvalidError,
    StepCapReachedError,
)
from warden.supervisor.journal import Effect, Journal, RecordedCall, RunState
from warden.supervisor.run_states import TERMINAL

log = structlog.get_logger("warden.run")

PLAN_SYSTEM = (
    "You are the planner of a small software team with these workers: {roles}. "
    "Break the task into at most {max_steps} steps, each handed to one worker. Reply with "
    'JSON only, exactly: {{"steps": [{{"role": "<worker>", "instruction": "<what to do>"}}]}}'
)
SYNTH_SYSTEM = (
    "You are the lead of a small software team. Given the task and what each step "
    "produced, write the final answer for the person who asked, briefly."
)

_blocks_decoder = msgspec.json.Decoder(list[Block])
Reply = TypeVar("Reply", TurnReply, ToolReply)


class PlanStep(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str
    instruction: str


class Plan(msgspec.Struct, frozen=True):
    steps: list[PlanStep]


_plan_decoder = msgspec.json.Decoder(Plan)


@dataclass(frozen=True)
class RunContext:
    """What every run supervisor of a daemon shares."""

    settings: Settings
    journal: Journal
    bus: Bus
    model: Model
    prices: PriceTable
    breakers: dict[str, CircuitBreaker]
    workspaces: Path
    tools: ToolRegistry
    tool_specs: dict[str, list[ToolSpec]] = field(default_factory=dict)
    """Each role's tool schemas, as its workers send them: part of a turn's prompt."""


class _StepFailed(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class _NeedsHuman(Exception):
    """The run cannot go on without a person: an ambiguous effect, or ``escalate``."""


class _RunFailed(Exception):
    pass


class RunSupervisor:
    """Drives one run to a terminal status. ``run`` never raises for the run's own
    failures (they become its status); it raises only when the journal or the bus
    underneath it breaks, which is a crash for its parent (which restarts it: a replay)."""

    def __init__(self, ctx: RunContext, state: RunState) -> None:
        self.ctx = ctx
        self.state = state
        self.run_id = state.id
        self.budget = Budget(state.id, state.budget_usd or ctx.settings.limits.run_budget_usd)
        self.tokens = 0
        self.workspace = ctx.workspaces / state.id
        self._workspace_path = ""
        self._prefix = f"{state.id}/e{state.epoch}"
        self._events_subject = subjects.run_events(state.id)
        self._seq = 0
        self._outputs: list[str] = []
        self._calls: dict[str, RecordedCall] = {}
        self._effects: dict[str, Effect] = {}
        self._done_steps: dict[int, tuple[str, str]] = {}

    # -- events -------------------------------------------------------------------------

    async def _emit(self, kind: str, status: str, message: str = "", **fields: object) -> None:
        self._seq += 1
        event = RunEvent(
            run_id=self.run_id, seq=self._seq, kind=kind, status=status, message=message,
            tokens=self.tokens, cost_usd=round(self.budget.spent_usd, 6), **fields,  # type: ignore[arg-type]
        )
        data = encoder.encode(event)
        try:
            await self.ctx.bus.publish(self._events_subject, data)
            if status in TERMINAL:
                await self.ctx.bus.publish(subjects.run_done(self.run_id), data)
        except BusError as exc:  # events are for watchers; the journal is the record
            log.warning("event_publish_failed", run_id=self.run_id, error=str(exc))

    async def _transition(self, status: str, message: str = "", **fields: object) -> None:
        # Only the run's end waits for its commit (its event says the result is readable);
        # a replay rebuilds the statuses before it from the recorded calls.
        await self.ctx.journal.transition(
            self.run_id, status, message=message, tokens=self.tokens,
            cost_usd=self.budget.spent_usd, wait=status in TERMINAL,
            **fields,  # type: ignore[arg-type]
        )
        await self._emit("status", status, message)

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> str:
        """Take the run from where the journal has it to a terminal status; returns it."""
        journal = self.ctx.journal
        fresh = self.state.status == "queued" and self.state.epoch == 0
        if not fresh:  # a replay: what is already recorded is not done again
            self._calls = await journal.recorded_calls(self.run_id)
            self._effects = await journal.effects(self.run_id)
            self.tokens, self.budget.spent_usd = await journal.spent(self.run_id)
            run = await journal.get_run(self.run_id)
            for step in run.steps if run else []:
                if step.status in ("succeeded", "skipped"):
                    self._done_steps[step.index] = (step.status, step.output)
        log.info("run_started", run_id=self.run_id, replay=not fresh, epoch=self.state.epoch)
        def make_workspace() -> str:
            self.workspace.mkdir(parents=True, exist_ok=True)
            return str(self.workspace.resolve())

        # Resolved once, off the event loop; every ToolRequest of the run carries it.
        self._workspace_path = await anyio.to_thread.run_sync(make_workspace)
        try:
            if self.state.plan:
                plan = _plan_decoder.decode(self.state.plan)
                if self.state.status != "running":
                    await self._transition("running", "resumed")
            else:
                await self._transition("planning", "planning")
                plan = await self._plan()
                await self._transition(
                    "running", f"plan of {len(plan.steps)} steps",
                    plan=encoder.encode(plan).decode(),
                )
            await self._run_steps(plan)
            result = await self._synthesize()
        except BudgetExhaustedError as exc:
            return await self._finish("budget_exhausted", str(exc))
        except StepCapReachedError as exc:
            log.warning("step_cap_reached", run_id=self.run_id, cap=exc.cap_name, limit=exc.cap)
            return await self._finish("degraded", str(exc))
        except (PlanInvalidError, _RunFailed) as exc:
            return await self._finish("failed", str(exc))
        except _NeedsHuman as exc:
            log.warning("run_escalated", run_id=self.run_id, reason=str(exc))
            return await self._finish("needs_human", str(exc))
        await self._transition("succeeded", "run succeeded", result=result)
        log.info("run_finished", run_id=self.run_id, status="succeeded", tokens=self.tokens)
        return "succeeded"

    async def _finish(self, status: str, reason: str) -> str:
        partial = "\n\n".join(self._outputs) or None
        await self._transition(status, reason, error=reason, result=partial)
        log.info("run_finished", run_id=self.run_id, status=status, reason=reason)
        return status

    # -- model calls made by the parent itself (plan, synthesis) ------------------------

    async def _call(
        self, key: str, purpose: Purpose, system: str, messages: list[Message]
    ) -> list[Block]:
        recorded = self._calls.get(key)
        if recorded is not None:
            return _blocks_decoder.decode(recorded.response)
        settings = self.ctx.settings.models
        request = ModelRequest(
            model=settings.planner, system=system, messages=messages,
            max_tokens=settings.max_tokens, purpose=purpose, scenario=self.state.scenario,
        )
        held = self.budget.reserve(self._worst_case(settings.planner, system, messages, []))
        try:
            reply = await self.ctx.model.complete(request)
        except BaseException:
            self.budget.release(held)
            raise
        crash_point("model_replied")
        await self._charge(key, held, purpose, reply.model, reply.usage, reply.latency_ms,
                           request, reply.content, step=None, turn=None)
        return reply.content

    async def _charge(
        self, key: str, held: float, purpose: str, model: str, usage: Usage, latency_ms: float,
        request: object, content: list[Block], *, step: int | None, turn: int | None,
    ) -> None:
        cost = self.ctx.prices.cost(model, usage) if model else 0.0
        self.budget.settle(held, cost)
        self.tokens += usage.total_tokens
        await self.ctx.journal.record_turn(
            self.run_id, key=key, step=step, turn=turn, purpose=purpose, model=model,
            request=request, response=content, usage=usage, cost_usd=cost,
            latency_ms=latency_ms,
        )

    def _worst_case(
        self, model: str, system: str, messages: list[Message], tools: list[ToolSpec]
    ) -> float:
        prompt = self.ctx.prices.estimate_prompt_tokens(system, messages, tools)
        return self.ctx.prices.worst_case(model, prompt, self.ctx.settings.models.max_tokens)

    async def _plan(self) -> Plan:
        settings = self.ctx.settings
        system = PLAN_SYSTEM.format(
            roles=", ".join(sorted(settings.roles)), max_steps=settings.limits.max_steps_per_run
        )
        messages = [Message(role="user", content=[TextBlock(text=f"Task: {self.state.text}")])]
        problem = "no attempt made"
        for attempt in range(settings.limits.plan_attempts):
            content = await self._call(f"{self._prefix}/plan/a{attempt}", "plan", system,
                                       messages)
            try:
                return self._validate_plan(_text(content))
            except ValueError as exc:
                problem = str(exc)
            log.warning("plan_invalid", run_id=self.run_id, problem=problem)
            await self._emit("plan_invalid", "planning", problem)
            messages = [
                *messages,
                Message(role="assistant", content=content),
                Message(role="user", content=[TextBlock(
                    text=f"That plan is invalid: {problem}. Reply again with the JSON plan only."
                )]),
            ]
        raise PlanInvalidError(self.run_id, settings.limits.plan_attempts, problem)

    def _validate_plan(self, text: str) -> Plan:
        """The plan in ``text``; raises ``ValueError`` saying what is wrong with it."""
        try:
            plan = _plan_decoder.decode(text.strip().encode())
        except msgspec.DecodeError as exc:
            raise ValueError(f"not a valid plan: {exc}") from exc
        if not plan.steps:
            raise ValueError("the plan has no steps")
        cap = self.ctx.settings.limits.max_steps_per_run
        if len(plan.steps) > cap:
            raise ValueError(f"the plan has {len(plan.steps)} steps, more than the cap of {cap}")
        roles = self.ctx.settings.roles
        for index, step in enumerate(plan.steps):
            if step.role not in roles:
                raise ValueError(f"steps[{index}].role {step.role!r} is not one of {sorted(roles)}")
            if not step.instruction.strip():
                raise ValueError(f"steps[{index}].instruction is empty")
        return plan

    async def _synthesize(self) -> str:
        text = f"Task: {self.state.text}\n\nWhat the steps produced:\n" + "\n\n".join(self._outputs)
        content = await self._call(f"{self._prefix}/synth", "synthesize", SYNTH_SYSTEM,
                                   [Message(role="user", content=[TextBlock(text=text)])])
        return _text(content)

    # -- steps --------------------------------------------------------------------------

    async def _run_steps(self, plan: Plan) -> None:
        limits = self.ctx.settings.limits
        dispatched = 0
        per_role: dict[str, int] = {}
        for index, step in enumerate(plan.steps):
            if index in self._done_steps:
                status, output = self._done_steps[index]
                if status == "succeeded":
                    self._outputs.append(f"[{step.role}] {output}")
                dispatched += 1
                per_role[step.role] = per_role.get(step.role, 0) + 1
                continue
            feedback: str | None = None
            for attempt in range(1 + limits.step_retries):
                if dispatched >= limits.max_steps_per_run:
                    raise StepCapReachedError(
                        "steps per run", limits.max_steps_per_run, self.run_id
                    )
                if per_role.get(step.role, 0) >= limits.max_steps_per_worker:
                    raise StepCapReachedError(
                        "steps per worker", limits.max_steps_per_worker, self.run_id, step.role
                    )
                dispatched += 1
                per_role[step.role] = per_role.get(step.role, 0) + 1
                if attempt and f"{self._step_key(index, attempt)}/t0" not in self._calls:
                    await anyio.sleep(self._backoff(attempt - 1))
                try:
                    text = await self._run_attempt(index, attempt, step, feedback)
                except _StepFailed as failed:
                    feedback = failed.reason
                    await self._emit("step_retry", "running", failed.reason, step=index,
                                     role=step.role)
                    continue
                self._outputs.append(f"[{step.role}] {text}")
                break
            else:
                await self._on_failure(index, step, feedback or "failed")

    async def _on_failure(self, index: int, step: PlanStep, reason: str) -> None:
        retries = self.ctx.settings.limits.step_retries
        why = f"step {index} ({step.role}) failed {1 + retries} times: {reason}"
        match self.ctx.settings.roles[step.role].on_failure:
            case "skip":
                await self.ctx.journal.record_step(
                    self.run_id, index, role=step.role, instruction=step.instruction,
                    status="skipped", output=why,
                )
                await self._emit("step_skipped", "running", why, step=index, role=step.role)
            case "escalate":
                raise _NeedsHuman(why)
            case _:
                raise _RunFailed(why)

    def _backoff(self, retry: int) -> float:
        limits = self.ctx.settings.limits
        return random.uniform(0.0, min(limits.retry_max_s, limits.retry_base_s * 2**retry))

    def _step_key(self, index: int, attempt: int) -> str:
        return f"{self._prefix}/s{index}/a{attempt}"

    async def _run_attempt(
        self, index: int, attempt: int, step: PlanStep, feedback: str | None
    ) -> str:
        ctx = self.ctx
        limits = ctx.settings.limits
        before_cost, before_tokens = self.budget.spent_usd, self.tokens
        text = f"Task: {self.state.text}\n\nYour step: {step.instruction}"
        if self._outputs:
            text += "\n\nEarlier steps:\n" + "\n".join(self._outputs)
        if feedback:
            text += f"\n\nA previous attempt at this step failed: {feedback}\nFix that."
        messages = [Message(role="user", content=[TextBlock(text=text)])]

        async def record(status: str, turns: int, output: str) -> None:
            # Not waited for: a replay rebuilds the step from its recorded calls, and the
            # next awaited write (a model reply, an intent, the run's end) commits it.
            await ctx.journal.record_step(
                self.run_id, index, role=step.role, instruction=step.instruction,
                status=status, turns=turns, output=output, tokens=self.tokens - before_tokens,
                cost_usd=self.budget.spent_usd - before_cost, wait=False,
            )

        await record("running", 0, "")
        await self._emit("step_started", "running", step.instruction, step=index, role=step.role)
        for turn in range(limits.max_turns_per_step):
            key = f"{self._step_key(index, attempt)}/t{turn}"
            try:
                content = await self._turn(key, index, turn, step.role, messages)
                messages = [*messages, Message(role="assistant", content=content)]
                uses = [b for b in content if isinstance(b, ToolUseBlock)]
                results = [
                    await self._tool(f"{key}/c{i}", index, turn, step.role, use)
                    for i, use in enumerate(uses)
                ]
            except _StepFailed as failed:
                await record("failed", turn + 1, failed.reason)
                raise
            if uses:
                messages.append(Message(role="user", content=[
                    ToolResultBlock(tool_use_id=u.id, content=r.output, is_error=not r.ok)
                    for u, r in zip(uses, results, strict=True)
                ]))
                await self._emit("turn", "running", ", ".join(u.name for u in uses),
                                 step=index, role=step.role)
                continue
            answer = _text(content)
            if answer.lstrip().upper().startswith("FAIL"):
                await record("failed", turn + 1, answer.strip()[:500])
                raise _StepFailed(f"step {index} ({step.role}): {answer.strip()[:500]}")
            await record("succeeded", turn + 1, answer)
            await self._emit("step_finished", "running", answer[:200], step=index, role=step.role)
            return answer
        # The model still wants tools after the last allowed turn: the parent stops here.
        await record("capped", limits.max_turns_per_step, "stopped at the turn cap")
        raise StepCapReachedError(
            "turns per step", limits.max_turns_per_step, self.run_id, step.role
        )

    async def _turn(
        self, key: str, index: int, turn: int, role: str, messages: list[Message]
    ) -> list[Block]:
        """One model call by a worker of ``role``: recorded, or made and recorded."""
        recorded = self._calls.get(key)
        if recorded is not None:
            return _blocks_decoder.decode(recorded.response)
        ctx = self.ctx
        request = TurnRequest(
            run_id=self.run_id, step=index, turn=turn, role=role,
            max_tokens=ctx.settings.models.max_tokens, messages=messages,
            scenario=self.state.scenario,
        )
        worst = self._worst_case(ctx.settings.roles[role].model, ctx.settings.roles[role].prompt,
                                 messages, ctx.tool_specs.get(role, []))
        held = self.budget.reserve(worst)
        try:
            reply = await self._request(role, request, turn_reply_decoder)
        except BaseException:
            self.budget.release(held)
            raise
        if reply.error is not None or reply.assistant is None:
            self.budget.release(held)
            raise _StepFailed(f"step {index} ({role}): {reply.error or 'no answer'}")
        crash_point("model_replied")
        await self._charge(key, held, "step", reply.model, reply.usage, reply.latency_ms,
                           request, reply.assistant.content, step=index, turn=turn)
        return reply.assistant.content

    async def _tool(
        self, key: str, index: int, turn: int, role: str, use: ToolUseBlock
    ) -> ToolCallRecord:
        """One tool call: its recorded outcome, or acted once and recorded."""
        effect = self._effects.get(key)
        if effect is not None and effect.record is not None:
            return effect.record
        try:
            tool = self.ctx.tools.get(use.name)
            side_effects, reconciles = tool.side_effects, tool.reconciles
            idempotent = tool.idempotent_by_key
        except KeyError:  # the worker refuses it and the model is told: no effect possible
            side_effects = reconciles = idempotent = False
        journal = self.ctx.journal

        def request(mode: str) -> ToolRequest:
            return ToolRequest(
                run_id=self.run_id, step=index, role=role, call_index=turn, name=use.name,
                arguments=use.input, idempotency_key=key, mode=mode,  # type: ignore[arg-type]
                workspace=self._workspace_path,
            )

        uncertain = effect is not None  # an intent with no outcome: did it act?
        if not uncertain and side_effects:
            await journal.record_intent(key, run_id=self.run_id, step=index, tool=use.name,
                                        arguments=use.input)
        while True:
            if uncertain and side_effects and not idempotent:
                if not reconciles:
                    raise _NeedsHuman(
                        f"tool call {key!r} ({use.name}) may or may not have acted before a "
                        "crash, and the tool can neither reconcile nor repeat it safely"
                    )
                answer = await self._request(role, request("reconcile"), tool_reply_decoder)
                if answer.error is not None:
                    raise _NeedsHuman(f"tool call {key!r} ({use.name}): {answer.error}")
                if answer.record is not None:  # it had acted: take its outcome
                    log.info("effect_reconciled", run_id=self.run_id, key=key, acted=True)
                    await journal.record_outcome(key, run_id=self.run_id, step=index,
                                                 turn=turn, record=answer.record)
                    return answer.record
                log.info("effect_reconciled", run_id=self.run_id, key=key, acted=False)
            try:
                answer = await self._request(role, request("run"), tool_reply_decoder,
                                             certain=not side_effects or idempotent)
            except _Uncertain:
                uncertain = True  # the request may have reached a worker: reconcile first
                continue
            if answer.error is not None or answer.record is None:
                raise _StepFailed(f"step {index} ({role}): {answer.error or 'no answer'}")
            # A call without side effects may simply run again on a replay: not waited for.
            await journal.record_outcome(key, run_id=self.run_id, step=index, turn=turn,
                                         record=answer.record, wait=side_effects)
            return answer.record

    async def _request(
        self, role: str, payload: TurnRequest | ToolRequest,
        decoder: msgspec.json.Decoder[Reply], *, certain: bool = True,
    ) -> Reply:
        """Send one request to ``role``'s workers through its breaker, waiting out an
        unreachable worker for up to ``transport_patience_s``.

        Raises ``_StepFailed`` past that patience, and ``_Uncertain`` (with
        ``certain=False``) when a request that may have been delivered got no answer.
        """
        ctx = self.ctx
        limits = ctx.settings.limits
        breaker = ctx.breakers[role]
        deadline = anyio.current_time() + limits.transport_patience_s
        data = encoder.encode(payload)
        failures = 0
        while True:
            try:
                breaker.acquire()
            except BreakerOpenError as exc:
                wait = exc.retry_after + random.uniform(0.0, 0.1)
                if anyio.current_time() + wait > deadline:
                    raise _StepFailed(f"step {payload.step} ({role}): {exc}") from exc
                await anyio.sleep(wait)
                continue
            try:
                raw = await ctx.bus.request(subjects.work(role), data,
                                            timeout=limits.step_timeout_s)
                reply = decoder.decode(raw)
            except (BusError, msgspec.DecodeError) as exc:
                if isinstance(exc, BusConnectionError):
                    breaker.release()  # a lost connection is not the worker's fault
                else:
                    breaker.record_failure()
                if not certain and not isinstance(exc, NoRespondersError):
                    raise _Uncertain(str(exc)) from exc
                wait = self._backoff(failures)
                failures += 1
                if anyio.current_time() + wait > deadline:
                    raise _StepFailed(
                        f"step {payload.step} ({role}): worker did not answer: {exc}"
                    ) from exc
                log.info("worker_unreachable", run_id=self.run_id, role=role, error=str(exc))
                await anyio.sleep(wait)
                continue
            if reply.error is None:
                breaker.record_success()
            else:
                breaker.record_failure()
            return reply


class _Uncertain(Exception):
    """A side-effecting request got no answer but may have been delivered."""


def _text(content: list[Block]) -> str:
    return "".join(b.text for b in content if isinstance(b, TextBlock))


def state_of_new_run(run_id: str, text: str, scenario: str | None,
                     budget_usd: float | None) -> RunState:
    """The ``RunState`` of a run just committed as ``queued``."""
    return RunState(run_id, "queued", text, scenario, budget_usd, None, 0)

