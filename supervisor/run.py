"""The per-run supervisor: plan → steps → evaluate → synthesize, under the parent's limits,
journalled so that a replay after any crash repeats no call and no side effect.

One ``RunSupervisor`` drives one run. It owns every loop, so every limit is enforced by
the parent, never trusted to a worker:

- **plan**: a model call returning ``{"steps": [{"role", "instruction"}]}``, validated
  (``planning.py``); an invalid plan is retried with the validation error
  (``plan_attempts`` in all), then the run fails.
- **steps**: each step is driven turn by turn. A turn is one model call made by a worker
  of the step's role (``TurnRequest``), then each tool the model asked for, run by a
  worker (``ToolRequest``). The step ends when the model answers without asking for
  tools. At ``max_turns_per_step`` turns the step is stopped whatever the model asks
  (``StepCapReachedError``) and the run ends ``degraded`` with its partial results; a
  guard that stops the step (loop detection, ``StepStoppedError``) ends it the same way,
  or ``needs_human`` as ``policy.on_loop`` says.
  Steps per run (retries included) and per worker are capped the same way.
- **calls**: every model call (plan and synthesis too) and every tool call goes through
  the run's ``CallGate`` (``gate.py``): replay, interceptors, budget, dispatch with
  retries and breakers, journal, observers. The run supervisor decides *what* to call;
  the gate decides *whether* and *how*. A call the gate fails for good
  (``ModelCallFailedError``: refused, or out of attempts or patience) ends the step
  without a retry; a run whose plan or synthesis call fails ends ``failed`` with the
  reason — never through crash and restart.
- **evaluate**: a step failed if a call of it failed, if its answer starts with ``FAIL``,
  or if a tool declared as a *check* (``run_tests`` by default) last failed or timed out
  in it — whatever the model's text says. A failed step is retried up to
  ``step_retries`` times with the failure as feedback, after a full-jitter exponential
  backoff (unless the failure is not retryable); then its role's ``on_failure`` decides:
  ``fail`` the run, ``skip`` the step, or ``escalate`` (``needs_human``).
- **confidence** (``confidence.py``): a step of a role with ``confidence_threshold``,
  that used a tool of medium or high risk and whose answer states a confidence below it,
  waits (``awaiting_approval``) for a person to accept the answer through the approvals
  board (``ctx.approvals``); denied or expired, the step fails without a retry.
- **synthesize**: a final model call over the step outputs gives the run's result.
- **dry run** (``RunState.dry_run``, from the journal, so a replay stays one): every tool
  call is marked ``dry_run`` for the guards, and a refused one is recorded as what the
  run would have been refused (``dry_run.py``); the rest of the run is the same.
- **taint** (README, "Injection containment"): in a step attempt, once a tool call's output
  may carry someone else's instructions (a tool declared ``trusted_output = false``, or
  ``read_file`` of a file this run did not write), every later call of the attempt carries
  ``tainted_by`` (that tool and its call key), and the approval guard asks a human for
  each of its medium- and high-risk calls. A replay rebuilds the taint from the recorded
  results, in the same order.

Durability. Every model call and tool call has an idempotency key derived from
``(run, epoch, step, attempt, turn, call)``. Model replies are journalled under their key;
a side-effecting tool call commits its *intent* before it acts and its *outcome* after.
Resuming a run (after a crash of the daemon or of this supervisor) replays this same code:
a completed step is taken from the journal, a recorded reply or outcome is reused instead
of calling again, and an intent with no outcome is resolved by the tool's ``reconcile``
hook, re-run when the tool is idempotent by key, and otherwise escalated (``needs_human``)
rather than guessed. A step retry first settles the intents its failed attempt left open
(``CallGate.settle``), and never repeats an effect that attempt already made.
``warden resume`` starts a new *epoch*, so the failed step runs
afresh under new keys while completed steps stay done.
"""

from __future__ import annotations

import contextlib
import functools
import posixpath
from typing import TYPE_CHECKING, TypedDict

import anyio
import structlog
from warden.actors import genai_attributes as ga
from warden.actors import tracing
from warden.actors.admission import step_turn
from warden.actors.tools import ToolDeclaration
from warden.actors.tools.files import ReadFile
from warden.bus.wire import (
    Block,
    Message,
    TextBlock,
    ToolCallRecord,
    ToolResultBlock,
    ToolUseBlock,
    encoder,
)
from warden.config import DEFAULT_TENANT
from warden.supervisor import trace_events
from warden.supervisor.budget import Budget
from warden.supervisor.confidence import ACCEPT_STEP, stated_confidence
from warden.supervisor.context import RunContext
from warden.supervisor.dry_run import record_refusal
from warden.supervisor.errors import (
    BudgetExhaustedError,
    CallFailedError,
    EffectUncertainError,
    PlanInvalidError,
    StepCapReachedError,
    StepStoppedError,
)
from warden.supervisor.events import (
    Event,
    PlanInvalid,
    StepFinished,
    StepRetry,
    StepSkipped,
    StepStarted,
    Turn,
)
from warden.supervisor.gate import CallGate, full_jitter
from warden.supervisor.interceptors import ModelCall, ToolCall
from warden.supervisor.journal import RunState
from warden.supervisor.planning import (
    SYNTH_SYSTEM,
    Plan,
    PlanStep,
    plan_decoder,
    plan_messages,
    plan_system,
    retry_plan_messages,
    step_prompt,
    synthesis_messages,
    validate_plan,
)
from warden.supervisor.policy import WRITE_TOOL
from warden.supervisor.run_states import TERMINAL, RunStatus

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from opentelemetry.trace import Span
    from warden.actors.otel_tracing import RunTracer

__all__ = ("TERMINAL", "RunContext", "RunSupervisor", "state_of_new_run")

log = structlog.get_logger("warden.run")

PLANNER = "planner"
"""The role named on the plan and synthesis calls, which the run supervisor makes itself."""


class _SoFar(TypedDict):
    run_id: str
    status: RunStatus
    tokens: int
    cost_usd: float


class _StepFailed(Exception):
    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        self.reason = reason
        self.retryable = retryable
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
        self.budget = Budget.of_run(state.id, ctx.settings, budget_usd=state.budget_usd,
                                    tenant=state.tenant, daily=ctx.spend)
        self.gate = CallGate(ctx, state.id, self.budget, scenario=state.scenario)
        self.gate.hooks.paused = self._paused
        self.gate.hooks.resumed = self._resumed
        if state.dry_run:
            self.gate.hooks.refused = functools.partial(record_refusal, ctx.journal, state.id)
        self._prefix = f"{state.id}/e{state.epoch}"
        self._outputs: list[str] = []
        self._done_steps: dict[int, tuple[str, str]] = {}
        self._written: set[str] = set()
        """Paths this run wrote with ``write_file`` (seen in this process)."""
        self._written_before: list[tuple[tuple[int, ...], str]] = []
        """Paths the journal says the run wrote, and where (a replay's earlier steps)."""
        self._span: Span | None = None
        """The run's root span while tracing is on (``run``)."""

    @property
    def tokens(self) -> int:
        return self.gate.tokens

    # -- events -------------------------------------------------------------------------

    def _so_far(self) -> _SoFar:
        """What every event of the run carries: its status, tokens and dollars so far."""
        return _SoFar(run_id=self.run_id, status=self.gate.status, tokens=self.tokens,
                      cost_usd=round(self.budget.spent_usd, 6))

    async def _emit(self, event: Event) -> None:
        await self.ctx.events.emit(event)

    async def _transition(self, status: RunStatus, message: str = "", *, wait: bool = False,
                          error: str | None = None, result: str | None = None,
                          plan: str | None = None) -> None:
        # Only the run's end (its event says the result is readable) and a pause (a person
        # reads it) wait for their commit; a replay rebuilds the other statuses from the
        # recorded calls.
        await self.ctx.events.transition(
            self.run_id, status, message=message, error=error, result=result, plan=plan,
            tokens=self.tokens, cost_usd=self.budget.spent_usd, wait=wait or status in TERMINAL,
        )
        self.gate.status = status
        if self._span is not None:
            self._span.add_event(ga.EVENT_RUN_STATUS, {ga.WARDEN_RUN_STATUS: status})

    async def _paused(self, reason: str) -> None:
        await self._transition("awaiting_approval", reason, wait=True)

    async def _resumed(self) -> None:
        await self._transition("running", "decision taken")

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> str:
        """Take the run from where the journal has it to a terminal status; returns it.
        With tracing on, the run's root span in this process (``actors/otel_tracing.py``).
        """
        traces = tracing.tracer()
        if traces is None:
            return await self._drive()
        with traces.run_span(self.run_id, dry_run=self.state.dry_run) as span:
            self._span = span
            status = await self._drive()
            traces.run_ended(span, status, tokens=self.tokens, cost_usd=self.budget.spent_usd)
            return status

    async def _drive(self) -> str:
        journal = self.ctx.journal
        fresh = self.state.status == "queued" and self.state.epoch == 0
        if not fresh:  # a replay: what is already recorded is not done again
            self.gate = CallGate(
                self.ctx, self.run_id, self.budget, scenario=self.state.scenario,
                calls=await journal.recorded_calls(self.run_id),
                effects=await journal.effects(self.run_id), hooks=self.gate.hooks,
            )
            self.gate.tokens, self.budget.spent_usd = await journal.spent(self.run_id)
            self.budget.spent_tokens = self.gate.tokens
            for key, effect in self.gate.effects.items():
                path = _written_path(effect.record)
                if path is not None:
                    self._written_before.append((_position(key), path))
            run = await journal.get_run(self.run_id)
            for step in run.steps if run else []:
                if step.status in ("succeeded", "skipped"):
                    self._done_steps[step.index] = (step.status, step.output)
        log.info("run_started", run_id=self.run_id, replay=not fresh, epoch=self.state.epoch)
        try:
            if self.state.plan:
                plan = plan_decoder.decode(self.state.plan)
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
        except StepStoppedError as exc:
            log.warning("step_stopped", run_id=self.run_id, interceptor=exc.interceptor,
                        reason=exc.reason)
            return await self._finish("needs_human" if exc.status == "needs_human"
                                      else "degraded", str(exc))
        except StepCapReachedError as exc:
            log.warning("step_cap_reached", run_id=self.run_id, cap=exc.cap_name, limit=exc.cap)
            return await self._finish("degraded", str(exc))
        except (PlanInvalidError, CallFailedError, _RunFailed) as exc:
            return await self._finish("failed", str(exc))
        except (_NeedsHuman, EffectUncertainError) as exc:
            log.warning("run_escalated", run_id=self.run_id, reason=str(exc))
            return await self._finish("needs_human", str(exc))
        await self._transition("succeeded", "run succeeded", result=result)
        log.info("run_finished", run_id=self.run_id, status="succeeded", tokens=self.tokens)
        return "succeeded"

    async def _finish(self, status: RunStatus, reason: str) -> str:
        partial = "\n\n".join(self._outputs) or None
        await self._transition(status, reason, error=reason, result=partial)
        log.info("run_finished", run_id=self.run_id, status=status, reason=reason)
        return status

    # -- plan and synthesis: model calls of the parent's own ---------------------------

    def _parent_call(self, key: str, purpose: str, system: str, messages: list[Message]
                     ) -> ModelCall:
        models = self.ctx.settings.models
        chain = models.synthesis_chain if purpose == "synthesize" else models.plan_chain
        return ModelCall(
            key=key, purpose=purpose, role=PLANNER, model=chain[0],  # type: ignore[arg-type]
            system=system, messages=messages, tools=[], max_tokens=models.max_tokens,
            fallback=chain[1:],
        )

    async def _plan(self) -> Plan:
        traces = tracing.tracer()
        with traces.plan_span(self.run_id) if traces else contextlib.nullcontext():
            return await self._make_plan()

    async def _make_plan(self) -> Plan:
        settings = self.ctx.settings
        system = plan_system(settings)
        messages = plan_messages(self.state.text)
        problem = "no attempt made"
        for attempt in range(settings.limits.plan_attempts):
            content = await self.gate.model(self._parent_call(
                f"{self._prefix}/plan/a{attempt}", "plan", system, messages))
            try:
                return validate_plan(_text(content), settings)
            except ValueError as exc:
                problem = str(exc)
            log.warning("plan_invalid", run_id=self.run_id, problem=problem)
            await self._emit(PlanInvalid(**self._so_far(), attempt=attempt, problem=problem))
            messages = retry_plan_messages(messages, content, problem)
        raise PlanInvalidError(self.run_id, settings.limits.plan_attempts, problem)

    async def _synthesize(self) -> str:
        content = await self.gate.model(self._parent_call(
            f"{self._prefix}/synth", "synthesize", SYNTH_SYSTEM,
            synthesis_messages(self.state.text, self._outputs)))
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
                if attempt:
                    await self.gate.settle()  # the failed attempt's open intents first
                    if f"{self._step_key(index, attempt)}/t0" not in self.gate.calls:
                        await anyio.sleep(full_jitter(
                            limits.retry_base_s, limits.retry_max_s, attempt - 1))
                try:
                    text = await self._run_attempt(index, attempt, step, feedback)
                except _StepFailed as failed:
                    feedback = failed.reason
                    if failed.retryable and attempt < limits.step_retries:
                        await self._emit(StepRetry(**self._so_far(), step=index,
                                                   role=step.role, attempt=attempt,
                                                   reason=failed.reason))
                        continue
                    await self._on_failure(index, step, failed.reason, attempt + 1)
                    break
                self._outputs.append(f"[{step.role}] {text}")
                break

    async def _on_failure(self, index: int, step: PlanStep, reason: str, attempts: int
                          ) -> None:
        why = f"step {index} ({step.role}) failed {attempts} times: {reason}"
        match self.ctx.settings.roles[step.role].on_failure:
            case "skip":
                await self.ctx.journal.record_step(
                    self.run_id, index, role=step.role, instruction=step.instruction,
                    status="skipped", output=why,
                )
                await self._emit(StepSkipped(**self._so_far(), step=index, role=step.role,
                                             reason=why))
            case "escalate":
                raise _NeedsHuman(why)
            case _:
                raise _RunFailed(why)

    def _step_key(self, index: int, attempt: int) -> str:
        return f"{self._prefix}/s{index}/a{attempt}"

    def _run_attempt(self, index: int, attempt: int, step: PlanStep, feedback: str | None
                     ) -> Coroutine[object, object, str]:
        """One attempt of a step, in its span with tracing on (as ``execute_turn``)."""
        traces = tracing.tracer()
        if traces is None:
            return self._attempt(index, attempt, step, feedback)
        return self._traced_attempt(traces, index, attempt, step, feedback)

    async def _traced_attempt(self, traces: RunTracer, index: int, attempt: int,
                              step: PlanStep, feedback: str | None) -> str:
        before_cost, before_tokens = self.budget.spent_usd, self.tokens
        with traces.step_span(self.run_id, role=step.role, step=index, attempt=attempt,
                              model=self.ctx.settings.roles[step.role].model) as span:
            try:
                return await self._attempt(index, attempt, step, feedback)
            finally:
                traces.step_ended(span, tokens=self.tokens - before_tokens,
                                  cost_usd=self.budget.spent_usd - before_cost)

    async def _attempt(
        self, index: int, attempt: int, step: PlanStep, feedback: str | None
    ) -> str:
        ctx = self.ctx
        limits = ctx.settings.limits
        # The same function the role's workers check a turn with (actors/admission.py).
        shape = step_turn(ctx.settings.roles[step.role], ctx.settings.models)
        before_cost, before_tokens = self.budget.spent_usd, self.tokens
        messages = [Message(role="user", content=[TextBlock(
            text=step_prompt(self.state.text, step.instruction, self._outputs, feedback))])]
        stored = 0
        checks: dict[str, ToolCallRecord] = {}
        """The last result of each check tool called in this attempt."""
        tainted_by: str | None = None
        """The first output in this attempt that may carry someone else's instructions."""
        risky: str | None = None
        """The first call of medium or high risk this attempt made (for confidence)."""

        async def record(status: str, turns: int, output: str) -> None:
            # Not waited for: a replay rebuilds the step from its recorded calls, and the
            # next awaited write (a model reply, an intent, the run's end) commits it.
            await ctx.journal.record_step(
                self.run_id, index, role=step.role, instruction=step.instruction,
                status=status, turns=turns, output=output, tokens=self.tokens - before_tokens,
                cost_usd=self.budget.spent_usd - before_cost, wait=False,
            )

        await record("running", 0, "")
        await self._emit(StepStarted(**self._so_far(), step=index, role=step.role,
                                     attempt=attempt, instruction=step.instruction))
        for turn in range(limits.max_turns_per_step):
            key = f"{self._step_key(index, attempt)}/t{turn}"
            try:
                content = await self.gate.model(ModelCall(
                    key=key, purpose="step", role=step.role, model=shape.model,
                    system=shape.system, messages=messages,
                    tools=ctx.tool_specs.get(step.role, []),
                    max_tokens=shape.max_tokens, step=index, turn=turn,
                    stored_from=stored, fallback=shape.models[1:],
                ))
                stored = len(messages)
                messages = [*messages, Message(role="assistant", content=content)]
                uses = [b for b in content if isinstance(b, ToolUseBlock)]
                results = []
                for i, use in enumerate(uses):
                    call_key = f"{key}/c{i}"
                    result = await self.gate.tool(ToolCall(
                        key=call_key, role=step.role, step=index, turn=turn,
                        name=use.name, arguments=use.input, replay=self.gate.replaying,
                        dry_run=self.state.dry_run,
                        tainted_by=tainted_by, use_id=use.id,
                    ))
                    declared = self.gate.declared(use.name)
                    if declared is not None and declared.check:
                        checks[use.name] = result
                    if (risky is None and result.ok and declared is not None
                            and declared.risk != "low"):
                        risky = f"{use.name} ({declared.risk} risk)"
                    if tainted_by is None and self._taints(call_key, result, declared):
                        tainted_by = f"{use.name} ({call_key})"
                        log.info("step_tainted", run_id=self.run_id, step=index, by=tainted_by)
                    written = _written_path(result)
                    if written is not None:
                        self._written.add(written)
                    results.append(result)
            except StepStoppedError as exc:  # a guard stopped the step (policy.py: loop)
                await record("stopped", turn + 1, exc.reason)
                raise
            except CallFailedError as exc:
                await record("failed", turn + 1, exc.problem)
                raise _StepFailed(f"step {index} ({step.role}): {exc.problem}",
                                  retryable=exc.retryable) from exc
            if uses:
                messages.append(Message(role="user", content=[
                    ToolResultBlock(tool_use_id=u.id, content=r.output, is_error=not r.ok)
                    for u, r in zip(uses, results, strict=True)
                ]))
                await self._emit(Turn(**self._so_far(), step=index, role=step.role, turn=turn,
                                      tools=tuple(u.name for u in uses)))
                continue
            answer = _text(content)
            if answer.lstrip().upper().startswith("FAIL"):
                await record("failed", turn + 1, answer.strip()[:500])
                raise _StepFailed(f"step {index} ({step.role}): {answer.strip()[:500]}")
            failed_checks = [r for r in checks.values() if not r.ok]
            if failed_checks:
                why = "; ".join(_check_failure(r) for r in failed_checks)
                await record("failed", turn + 1, why)
                raise _StepFailed(f"step {index} ({step.role}): {why}")
            if risky is not None:
                refused = await self._accepted(index, attempt, step, answer, risky)
                if refused is not None:
                    await record("failed", turn + 1, refused)
                    raise _StepFailed(f"step {index} ({step.role}): {refused}", retryable=False)
            await record("succeeded", turn + 1, answer)
            await self._emit(StepFinished(**self._so_far(), step=index, role=step.role,
                                          attempt=attempt, output=answer))
            return answer
        # The model still wants tools after the last allowed turn: the parent stops here.
        await record("capped", limits.max_turns_per_step, "stopped at the turn cap")
        raise StepCapReachedError(
            "turns per step", limits.max_turns_per_step, self.run_id, step.role
        )

    async def _accepted(self, index: int, attempt: int, step: PlanStep, answer: str,
                        risky: str) -> str | None:
        """``None`` if the answer of a step that used ``risky`` may be accepted: its
        role asks for no confidence, or it states enough (or none). Else a person decides
        (an approval request of ``ACCEPT_STEP``, the run ``awaiting_approval``): ``None``
        when approved, why not when denied or expired. A replay finds the same request."""
        threshold = self.ctx.settings.roles[step.role].confidence_threshold
        confidence = stated_confidence(answer) if threshold else None
        if confidence is None or confidence >= threshold:
            return None
        why = (f"stated confidence {confidence:g} is below the role's confidence_threshold "
               f"= {threshold:g}, in a step that used {risky}")
        board = self.ctx.approvals
        if board is None:
            raise _NeedsHuman(f"step {index} ({step.role}): {why}; no approvals to wait on")
        request = ToolCall(key=f"{self._step_key(index, attempt)}/accept", role=step.role,
                           step=index, turn=-1, name=ACCEPT_STEP,
                           arguments={"answer": answer, "confidence": confidence})
        record = await board.request(self.run_id, request, "medium", why)
        waits = board.waits(record)
        trace_events.waiting("confidence", why, request.key, ACCEPT_STEP, record.id)
        if waits:
            await self._paused(f"approval {record.id}: accept the answer of step {index}? "
                               f"{why}")
        outcome = await board.wait(record)
        trace_events.waited("confidence", outcome.status, outcome.reason or "", request.key,
                            ACCEPT_STEP, record.id)
        if waits:
            await self._resumed()
        log.info("step_answer_decided", run_id=self.run_id, step=index, approval=record.id,
                 status=outcome.status)
        if outcome.status == "approved":
            return None
        return (f"its answer was not accepted ({why}): {outcome.status}"
                + (f" by {outcome.decided_by}: {outcome.reason}" if outcome.reason else ""))

    def _taints(self, key: str, result: ToolCallRecord, declared: ToolDeclaration | None
                ) -> bool:
        """Whether ``result`` may carry someone else's instructions: output of a tool
        declared untrusted (``declared``: its tool's declarations), or a file read that
        this run did not write before ``key``."""
        if declared is not None and not declared.trusted_output:
            return True
        if result.name != READ_TOOL or not result.ok:
            return False
        path = _normal_path(result.arguments.get("path"))
        if path is None:
            return True
        if path in self._written:
            return False
        here = _position(key)
        return not any(p == path and at < here for at, p in self._written_before)


READ_TOOL = ReadFile.name
"""The built-in read tool: its output taints a step unless the run wrote the file."""


def _normal_path(path: object) -> str | None:
    return posixpath.normpath(path) if isinstance(path, str) else None


def _written_path(record: ToolCallRecord | None) -> str | None:
    """The path an ``ok`` ``write_file`` call wrote, else ``None``."""
    if record is None or record.name != WRITE_TOOL or not record.ok:
        return None
    return _normal_path(record.arguments.get("path"))


def _position(key: str) -> tuple[int, ...]:
    """Where call ``key`` (``<run>/e<epoch>/s<step>/a<attempt>/t<turn>/c<call>``) comes in
    the run: its numbers, in order (a key of another shape comes first)."""
    numbers: list[int] = []
    for part in key.split("/")[1:]:
        digits = part[1:]
        if not digits.isdigit():
            return ()
        numbers.append(int(digits))
    return tuple(numbers)


def _check_failure(record: ToolCallRecord) -> str:
    how = "timed out" if record.timed_out else "failed"
    detail = record.output.strip().splitlines()[-1][:200] if record.output.strip() else ""
    return f"check {record.name!r} {how}" + (f" ({detail})" if detail else "")


def _text(content: list[Block]) -> str:
    return "".join(b.text for b in content if isinstance(b, TextBlock))


def state_of_new_run(run_id: str, text: str, scenario: str | None,
                     budget_usd: float | None, *, dry_run: bool = False,
                     tenant: str = DEFAULT_TENANT) -> RunState:
    """The ``RunState`` of a run just committed as ``queued``."""
    return RunState(run_id, "queued", text, scenario, budget_usd, None, 0, dry_run=dry_run,
                    tenant=tenant)
