"""The per-run supervisor: plan → steps → evaluate → synthesize, under the parent's limits.

One ``RunSupervisor`` drives one run. It owns every loop, so every limit is enforced by
the parent, never trusted to a worker:

- **plan**: a model call returning ``{"steps": [{"role", "instruction"}]}``, validated
  (JSON, known roles, at least one step, at most ``max_steps_per_run``); an invalid plan
  is retried with the validation error (``plan_attempts`` in all), then the run fails.
- **steps**: each step is handed to its role's workers over NATS one *turn* at a time
  (``TurnRequest`` → ``TurnReply``, with a deadline). The step ends when the model
  answers without asking for tools. At ``max_turns_per_step`` turns the step is stopped
  whatever the model asks (``StepCapReachedError``): the run ends ``degraded`` with its
  partial results. Steps per run (retries included) and per worker are capped the same way.
- **budget**: before every model call, its worst-case cost is reserved from the run's
  budget; a call that could exceed it is not made, and the run ends ``budget_exhausted``.
- **breakers**: one per worker role, shared by all runs. An open breaker fails the turn
  fast without calling the worker.
- **evaluate**: a step succeeded unless its worker failed or its answer starts with
  ``FAIL``; a failed step is retried once with the failure as feedback, then the run fails.
- **synthesize**: a final model call over the step outputs gives the run's result.

Every transition is journalled (and published on ``warden.runs.<id>.events``) before
the next effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec
import structlog

from actors.model import Model, ModelReply, ModelRequest, Purpose
from actors.pricing import PriceTable
from bus import subjects
from bus.connection import Bus
from bus.errors import BusError
from bus.wire import (
    Message,
    RunEvent,
    TaskSubmission,
    TextBlock,
    ToolSpec,
    TurnReply,
    TurnRequest,
    encoder,
    turn_reply_decoder,
)
from config import Settings
from supervisor.breaker import CircuitBreaker
from supervisor.budget import Budget
from supervisor.errors import (
    BreakerOpenError,
    BudgetExhaustedError,
    PlanInvalidError,
    StepCapReachedError,
)
from supervisor.journal import Journal

log = structlog.get_logger("warden.run")

TERMINAL = frozenset({"succeeded", "degraded", "budget_exhausted", "failed", "rejected"})

PLAN_SYSTEM = (
    "You are the planner of a small software team with these workers: {roles}. "
    "Break the task into at most {max_steps} steps, each handed to one worker. Reply with "
    'JSON only, exactly: {{"steps": [{{"role": "<worker>", "instruction": "<what to do>"}}]}}'
)
SYNTH_SYSTEM = (
    "You are the lead of a small software team. Given the task and what each step "
    "produced, write the final answer for the person who asked, briefly."
)


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
    tool_specs: dict[str, list[ToolSpec]]
    """Each role's tool schemas, as its workers send them: part of a turn's prompt."""


class _StepFailed(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass
class _StepOutcome:
    text: str
    turns: int


class RunSupervisor:
    """Drives one run to a terminal status. ``run`` never raises for the run's own
    failures (they become its status); it raises only when the journal or the bus
    underneath it breaks, which is a crash for its parent to handle."""

    def __init__(self, ctx: RunContext, run_id: str, task: TaskSubmission) -> None:
        self.ctx = ctx
        self.run_id = run_id
        self.task = task
        limits = ctx.settings.limits
        self.budget = Budget(run_id, task.budget_usd or limits.run_budget_usd)
        self.tokens = 0
        self.workspace = ctx.workspaces / run_id
        self._seq = 0
        self._outputs: list[str] = []

    # -- events -------------------------------------------------------------------------

    async def _emit(self, kind: str, status: str, message: str = "", **fields: object) -> None:
        self._seq += 1
        event = RunEvent(
            run_id=self.run_id, seq=self._seq, kind=kind, status=status, message=message,
            tokens=self.tokens, cost_usd=round(self.budget.spent_usd, 6), **fields,  # type: ignore[arg-type]
        )
        try:
            await self.ctx.bus.publish(subjects.run_events(self.run_id), encoder.encode(event))
        except BusError as exc:  # events are for watchers; the journal is the record
            log.warning("event_publish_failed", run_id=self.run_id, error=str(exc))

    async def _transition(self, status: str, message: str = "", **fields: object) -> None:
        await self.ctx.journal.transition(
            self.run_id, status, message=message, tokens=self.tokens,
            cost_usd=self.budget.spent_usd, **fields,  # type: ignore[arg-type]
        )
        await self._emit("status", status, message)

    # -- the run ------------------------------------------------------------------------

    async def run(self) -> str:
        """Take the run from ``queued`` to a terminal status; returns that status."""
        log.info("run_started", run_id=self.run_id)
        self.workspace.mkdir(parents=True, exist_ok=True)
        try:
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
        except (PlanInvalidError, _StepFailed) as exc:
            return await self._finish("failed", str(exc))
        await self._transition("succeeded", "run succeeded", result=result)
        log.info("run_finished", run_id=self.run_id, status="succeeded", tokens=self.tokens)
        return "succeeded"

    async def _finish(self, status: str, reason: str) -> str:
        partial = "\n\n".join(self._outputs) or None
        await self._transition(status, reason, error=reason, result=partial)
        log.info("run_finished", run_id=self.run_id, status=status, reason=reason)
        return status

    # -- model calls made by the parent itself (plan, synthesis) ------------------------

    async def _call(self, purpose: Purpose, system: str, messages: list[Message]) -> ModelReply:
        settings = self.ctx.settings.models
        request = ModelRequest(
            model=settings.planner, system=system, messages=messages,
            max_tokens=settings.max_tokens, purpose=purpose, scenario=self.task.scenario,
        )
        held = self.budget.reserve(self._worst_case(settings.planner, system, messages, []))
        try:
            reply = await self.ctx.model.complete(request)
        except BaseException:
            self.budget.release(held)
            raise
        cost = self.ctx.prices.cost(reply.model, reply.usage)
        self.budget.settle(held, cost)
        self.tokens += reply.usage.total_tokens
        await self.ctx.journal.record_turn(
            self.run_id, step=None, turn=None, purpose=purpose, model=reply.model,
            request=request, response=reply, usage=reply.usage, cost_usd=cost,
            latency_ms=reply.latency_ms,
        )
        return reply

    def _worst_case(
        self, model: str, system: str, messages: list[Message], tools: list[ToolSpec]
    ) -> float:
        prompt = self.ctx.prices.estimate_prompt_tokens(system, messages, tools)
        return self.ctx.prices.worst_case(model, prompt, self.ctx.settings.models.max_tokens)

    async def _plan(self) -> Plan:
        settings = self.ctx.settings
        roles = sorted(settings.roles)
        system = PLAN_SYSTEM.format(
            roles=", ".join(roles), max_steps=settings.limits.max_steps_per_run
        )
        messages = [Message(role="user", content=[TextBlock(text=f"Task: {self.task.text}")])]
        problem = "no attempt made"
        for _attempt in range(settings.limits.plan_attempts):
            reply = await self._call("plan", system, messages)
            try:
                return self._validate_plan(reply.text)
            except ValueError as exc:
                problem = str(exc)
            log.warning("plan_invalid", run_id=self.run_id, problem=problem)
            await self._emit("plan_invalid", "planning", problem)
            messages = [
                *messages,
                Message(role="assistant", content=reply.content),
                Message(
                    role="user",
                    content=[TextBlock(text=f"That plan is invalid: {problem}. Reply again "
                                            "with the JSON plan only.")],
                ),
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
        for index, step in enumerate(plan.steps):
            if step.role not in self.ctx.settings.roles:
                raise ValueError(
                    f"steps[{index}].role {step.role!r} is not one of "
                    f"{sorted(self.ctx.settings.roles)}"
                )
            if not step.instruction.strip():
                raise ValueError(f"steps[{index}].instruction is empty")
        return plan

    async def _synthesize(self) -> str:
        summary = "\n\n".join(self._outputs)
        text = f"Task: {self.task.text}\n\nWhat the steps produced:\n{summary}"
        reply = await self._call("synthesize", SYNTH_SYSTEM, [
            Message(role="user", content=[TextBlock(text=text)])
        ])
        return reply.text

    # -- steps --------------------------------------------------------------------------

    async def _run_steps(self, plan: Plan) -> None:
        limits = self.ctx.settings.limits
        dispatched = 0
        per_role: dict[str, int] = {}
        for index, step in enumerate(plan.steps):
            feedback: str | None = None
            for attempt in range(2):  # the step, then at most one retry with feedback
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
                try:
                    outcome = await self._run_step(index, step, feedback)
                except _StepFailed as failed:
                    if attempt == 0:
                        feedback = failed.reason
                        await self._emit("step_retry", "running", failed.reason, step=index,
                                         role=step.role)
                        continue
                    raise _StepFailed(
                        f"step {index} ({step.role}) failed twice: {failed.reason}"
                    ) from failed
                self._outputs.append(f"[{step.role}] {outcome.text}")
                break

    async def _run_step(self, index: int, step: PlanStep, feedback: str | None) -> _StepOutcome:
        ctx = self.ctx
        limits = ctx.settings.limits
        role_model = ctx.settings.roles[step.role].model
        role_prompt = ctx.settings.roles[step.role].prompt
        breaker = ctx.breakers[step.role]
        before_cost, before_tokens = self.budget.spent_usd, self.tokens
        text = f"Task: {self.task.text}\n\nYour step: {step.instruction}"
        if self._outputs:
            text += "\n\nEarlier steps:\n" + "\n".join(self._outputs)
        if feedback:
            text += f"\n\nA previous attempt at this step failed: {feedback}\nFix that."
        messages = [Message(role="user", content=[TextBlock(text=text)])]
        await ctx.journal.record_step(
            self.run_id, index, role=step.role, instruction=step.instruction, status="running"
        )
        await self._emit("step_started", "running", step.instruction, step=index, role=step.role)

        async def fail(reason: str, turns: int) -> _StepFailed:
            await ctx.journal.record_step(
                self.run_id, index, role=step.role, instruction=step.instruction,
                status="failed", turns=turns, output=reason,
                tokens=self.tokens - before_tokens, cost_usd=self.budget.spent_usd - before_cost,
            )
            return _StepFailed(f"step {index} ({step.role}): {reason}")

        for turn in range(limits.max_turns_per_step):
            held = self.budget.reserve(
                self._worst_case(role_model, role_prompt, messages, ctx.tool_specs[step.role])
            )
            try:
                breaker.acquire()
            except BreakerOpenError as exc:
                self.budget.release(held)
                raise await fail(str(exc), turn) from exc
            request = TurnRequest(
                run_id=self.run_id, step=index, turn=turn, role=step.role,
                max_tokens=ctx.settings.models.max_tokens, messages=messages,
                scenario=self.task.scenario, workspace=str(self.workspace.resolve()),
            )
            try:
                raw = await ctx.bus.request(
                    subjects.work(step.role), encoder.encode(request),
                    timeout=limits.step_timeout_s,
                )
                reply: TurnReply = turn_reply_decoder.decode(raw)
            except (BusError, msgspec.DecodeError) as exc:
                breaker.record_failure()
                self.budget.release(held)
                raise await fail(f"worker did not answer: {exc}", turn) from exc
            cost = ctx.prices.cost(reply.model, reply.usage) if reply.model else 0.0
            self.budget.settle(held, cost)
            self.tokens += reply.usage.total_tokens
            if reply.error is not None or reply.assistant is None:
                breaker.record_failure()
                raise await fail(reply.error or "worker sent no answer", turn + 1)
            breaker.record_success()
            await ctx.journal.record_turn(
                self.run_id, step=index, turn=turn, purpose="step", model=reply.model,
                request=request, response=reply.assistant, usage=reply.usage, cost_usd=cost,
                latency_ms=reply.latency_ms, tool_calls=reply.tool_calls,
            )
            messages = [*messages, reply.assistant]
            if reply.tool_results:
                messages.append(Message(role="user", content=list(reply.tool_results)))
                await self._emit(
                    "turn", "running", ", ".join(c.name for c in reply.tool_calls),
                    step=index, role=step.role,
                )
                continue
            answer = "".join(b.text for b in reply.assistant.content if isinstance(b, TextBlock))
            if answer.lstrip().upper().startswith("FAIL"):
                raise await fail(answer.strip()[:500], turn + 1)
            await ctx.journal.record_step(
                self.run_id, index, role=step.role, instruction=step.instruction,
                status="succeeded", turns=turn + 1, output=answer,
                tokens=self.tokens - before_tokens, cost_usd=self.budget.spent_usd - before_cost,
            )
            await self._emit("step_finished", "running", answer[:200], step=index, role=step.role)
            return _StepOutcome(text=answer, turns=turn + 1)
        # The model still wants tools after the last allowed turn: the parent stops here.
        await ctx.journal.record_step(
            self.run_id, index, role=step.role, instruction=step.instruction, status="capped",
            turns=limits.max_turns_per_step, output="stopped at the turn cap",
            tokens=self.tokens - before_tokens, cost_usd=self.budget.spent_usd - before_cost,
        )
        raise StepCapReachedError(
            "turns per step", limits.max_turns_per_step, self.run_id, step.role
        )

