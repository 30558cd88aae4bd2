"""The call gate: the one door through which every model call and tool call of a run passes.

The spec. A call goes through these, in this order, and nothing else makes a call:

1. **replay** by idempotency key. A call the journal has recorded is answered from it;
   nothing below runs (no interceptor is asked again, nothing is reserved, sent, recorded).
2. **declarations** (tool calls). The tool's declarations (side effects, idempotent by
   key, reconcile, check) come from the one registry the parent holds. A tool the parent
   does not know, or that is not in the role's allowlist, is refused before any intent is
   written: the model is told, nothing is sent. A side effect that an earlier attempt of
   the same step already made, with the same arguments, is answered from its outcome
   (a step retry never repeats an effect that is not idempotent; a check always runs).
3. **interceptors**, in their fixed order (the daemon's are the policy guards, in the
   guard order of ``policy.py``: blocked patterns → magnitude → loop → approval). Each
   answers one ``Decision``:
   ``Allow()`` (ask the next), ``Deny(reason)`` (the call is not made: a tool call's
   result tells the model why, or with ``ends_run`` the refusal is recorded and the step
   stops, ``StepStoppedError``; a model call fails the step with ``CallDeniedError``),
   ``Pause(reason, decide)`` (the run waits, ``awaiting_approval``, for ``decide()``,
   whose answer then stands) or ``Substitute(result)`` (the call is not made; ``result``
   is its answer, recorded as if it had been made). The first answer other than
   ``Allow`` decides. The last of the daemon's is the dry-run guard (``dry_run.py``),
   which answers a dry run's side-effecting calls; one that still comes out allowed is
   refused here (a dry run fails closed).
4. **budget** (model calls). The call's worst case (its prompt priced at the dearest
   input rate plus ``max_tokens`` of output, at the dearest model of its chain; in
   tokens, the prompt's estimate plus ``max_tokens``) is reserved at every budget level
   at once (day, tenant, run, step: ``budget.py``); a call that could take any level past
   its limit is not made (``BudgetExhaustedError``, naming the level).
5. **dispatch** through the ``Dispatcher``, to the first model of the call's chain that
   serves (``tiers.py``: the next one when a model is overloaded or its breaker is open,
   or one tier down when the budget asks). A model call makes at most
   ``models.attempts`` requests, each cancelled at ``models.timeout_s`` by the worker that
   makes it; a failing endpoint (429, 5xx, unreachable, its breaker open) is waited out
   for up to ``models.patience_s``, honouring the provider's ``retry-after`` up to
   ``models.retry_after_cap_s``; a refusal that no retry repairs (spend limit, invalid
   request, authentication) fails at once (``ModelCallFailedError``, which the step does
   not retry). One breaker per model endpoint opens on repeated failures and fails fast
   while open. A worker that does not answer is waited out for
   ``limits.transport_patience_s`` behind its role's breaker (``WorkerUnreachableError``).
   A side-effecting tool call commits its *intent* before it is sent. Each request of a
   model call first waits for the rate limiter (``rate_limit.py``), which also takes a
   retryable 429: sent again there, not an attempt, not a breaker failure.
6. **record** in the journal, under the call's key (a model reply and a side effect's
   outcome are waited for: a replay depends on them).
7. **observers** are told: ``ModelCallMade`` / ``ToolCallMade`` on the run's event stream
   (not for a call answered by the replay; not built at all when no observer takes its
   kind, ``EventStream.wants``).

A step retry first calls ``settle()``: every intent of the run still without an outcome
is reconciled by its tool (or repeated under its own key when the tool is idempotent by
key), and one that can be neither is ``EffectUncertainError`` (the run needs a human).

The gate is per run (one ``RunSupervisor`` owns one); what runs share (settings,
journal, dispatcher, breakers, interceptors) comes in the ``RunContext``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import anyio
import msgspec
import structlog
from warden.actors.errors import UnknownToolError
from warden.actors.tools import ToolDeclaration
from warden.bus.wire import (
    Block,
    TextBlock,
    ToolCallRecord,
    ToolReply,
    ToolRequest,
    TurnReply,
    TurnRequest,
    Usage,
    encoder,
)
from warden.config.crashpoints import crash_point
from warden.supervisor import tiers, trace_events
from warden.supervisor.breaker import CircuitBreaker
from warden.supervisor.budget import Budget
from warden.supervisor.dispatch import DispatchError
from warden.supervisor.errors import (
    BreakerOpenError,
    CallDeniedError,
    EffectUncertainError,
    ModelCallFailedError,
    StepStoppedError,
    ToolCallFailedError,
    WorkerUnreachableError,
)
from warden.supervisor.events import ModelCallMade, ToolCallMade
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

if TYPE_CHECKING:
    from warden.supervisor.context import RunContext
    from warden.supervisor.journal import Effect, RecordedCall
    from warden.supervisor.run_states import RunStatus

__all__ = ("CallGate", "full_jitter")

log = structlog.get_logger("warden.gate")

_blocks_decoder = msgspec.json.Decoder(list[Block])
_NO_TOOLS = msgspec.Raw(b"[]")
_args_encoder = msgspec.json.Encoder(order="sorted")


class _Uncertain(Exception):
    """A side-effecting request got no answer but may have been delivered."""


@dataclass(slots=True)
class _OpenIntent:
    call: ToolCall
    declared: ToolDeclaration


@dataclass
class _Hooks:
    paused: Callable[[str], Awaitable[None]] | None = None
    resumed: Callable[[], Awaitable[None]] | None = None
    refused: Callable[[ToolCall, ToolCallRecord, str | None], Awaitable[None]] | None = None
    """Told of each tool call the gate refuses (unknown, not allowlisted, denied by an
    interceptor, named there), just before the refusal is recorded (so a replay that
    finds the refusal finds what the hook wrote too): a dry run records that it would
    have been refused (``dry_run.record_refusal``)."""


# -- the gate ---------------------------------------------------------------------------


@dataclass(eq=False)
class CallGate:
    """The gate of one run. ``model`` and ``tool`` are cancellation points and raise only
    what the module docstring names (plus what the journal raises when it breaks)."""

    ctx: RunContext
    run_id: str
    budget: Budget
    scenario: str | None = None
    calls: dict[str, RecordedCall] = field(default_factory=dict)
    """Recorded model calls of the run, by key (the replay)."""
    effects: dict[str, Effect] = field(default_factory=dict)
    """Recorded tool calls of the run, by key (the replay)."""
    tokens: int = 0
    status: RunStatus = "running"
    """The run's status, which the run supervisor keeps here for the gate's events."""
    hooks: _Hooks = field(default_factory=_Hooks)
    _open: dict[str, _OpenIntent] = field(default_factory=dict)
    _acted: dict[tuple[str, str, bytes], ToolCallRecord] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.replaying = bool(self.effects)
        """Whether the run began with tool calls recorded (``ToolCall.replay``)."""
        for key, effect in self.effects.items():
            record = effect.record
            declared = self.declared(effect.tool)
            if record is not None and record.ok and declared is not None and _once(declared):
                self._acted[_effect_identity(key, record.name, record.arguments)] = record

    # -- model calls -------------------------------------------------------------------

    async def model(self, call: ModelCall) -> list[Block]:
        """The model's content for ``call``: recorded, substituted, or made and recorded.

        Raises ``CallDeniedError``, ``BudgetExhaustedError``, ``ModelCallFailedError`` and
        ``WorkerUnreachableError``.
        """
        recorded = self.calls.get(call.key)
        if recorded is not None:
            return _blocks_decoder.decode(recorded.response)
        if self.ctx.interceptors:
            verdict, by = await self._decide(call)
            if isinstance(verdict, Deny):
                trace_events.decided(by, "deny", verdict.reason, call.key)
                raise CallDeniedError(self.run_id, call.key, by, verdict.reason)
            if isinstance(verdict, Substitute):
                trace_events.decided(by, "substitute", "", call.key)
                content = _content_of(verdict.result)
                await self._record_model(call, call.model, content, Usage(), 0.0, 0.0, by)
                return content
        prices = self.ctx.prices
        chain, why = tiers.chain_of(call, downgrade=self.budget.wants_downgrade())
        prompt_tokens = prices.estimate_prompt_tokens(call.system, call.messages, call.tools)
        # Whichever model of the chain serves, the reservation covers it (tiers.py).
        worst = max(prices.worst_case(model, prompt_tokens, call.max_tokens)
                    for model in chain)
        tokens = prompt_tokens + call.max_tokens
        held = self.budget.reserve(worst, tokens, step=call.step)
        try:
            reply, served, why = await self._serve(call, chain, why, tokens)
        except BaseException:
            self.budget.release(held)
            raise
        crash_point("model_replied")
        cost = prices.cost(served, reply.usage)
        self.budget.settle(held, cost, reply.usage.total_tokens)
        assert reply.assistant is not None
        await self._record_model(call, reply.model or served, reply.assistant.content,
                                 reply.usage, cost, reply.latency_ms, None,
                                 fallback=None if why is None else (served, why))
        return reply.assistant.content

    async def _serve(self, call: ModelCall, chain: tuple[str, ...],
                     why: tiers.FallbackReason | None, tokens: int,
                     ) -> tuple[TurnReply, str, tiers.FallbackReason | None]:
        """The reply of the first model of ``chain`` that serves the call, that model, and
        why an earlier one did not (``tiers.py``). ``tokens``: the call's worst case in
        tokens, as the budget reserved it (what the rate limiter takes)."""
        last = len(chain) - 1
        for index, model in enumerate(chain):
            try:
                return (await self._attempts(call, model, tokens, fall_back=index < last),
                        model, why)
            except tiers.FallBack as exc:
                why = exc.reason
                log.info("model_fallback", run_id=self.run_id, key=call.key, model=model,
                         next=chain[index + 1], reason=exc.reason, problem=exc.problem)
        raise AssertionError("the last model of a chain does not fall back")

    async def _attempts(self, call: ModelCall, model: str, tokens: int, *,
                        fall_back: bool) -> TurnReply:
        """Send the call to ``model`` until it is answered, refused for good, or out of
        attempts or patience (see the module docstring); with ``fall_back``, raise
        ``tiers.FallBack`` instead of waiting out an open breaker or an overload."""
        settings = self.ctx.settings
        models = settings.models
        request = TurnRequest(
            run_id=self.run_id, step=call.step, turn=call.turn, role=call.role,
            max_tokens=call.max_tokens, messages=call.messages, scenario=self.scenario,
            model=model, system=call.system, tools=self._tools_json(call),
            purpose=call.purpose,
            deadline_s=models.timeout_s,
        )
        # The worker answers at its deadline; the NATS round trip gets the request timeout.
        wait_s = models.timeout_s + settings.nats.request_timeout_s
        # The patience runs from the first setback, not from the call's start: reading the
        # clock costs a backend lookup, and the calls that succeed at once (nearly all)
        # need none.
        give_up_at = math.inf
        breaker = self._model_breaker(model)
        limiter = self.ctx.rate_limiter
        permit = None
        attempt = 0
        while True:
            try:
                breaker.acquire()
            except BreakerOpenError as exc:
                if fall_back:
                    raise tiers.FallBack("breaker_open", str(exc)) from None
                now = anyio.current_time()
                give_up_at = min(give_up_at, now + models.patience_s)
                if now + exc.retry_after > give_up_at:
                    fault = self.ctx.model_faults.get(model, "")
                    raise ModelCallFailedError(
                        self.run_id, call.key, model, attempt,
                        f"{exc}; not waited for past the patience of {models.patience_s:g} s"
                        + (f" (its last failure: {fault})" if fault else ""),
                    ) from None
                await anyio.sleep(exc.retry_after + random.uniform(0.0, 0.1))
                continue
            attempt += 1
            try:
                permit = await limiter.acquire(call, model, self.budget.tenant, self.run_id,
                                               attempt, permit, tokens=tokens)
                reply = await self._send(call.role, call.key, request, wait_s=wait_s)
            except BaseException:
                breaker.release()
                raise
            assert isinstance(reply, TurnReply)
            if limiter.settle(permit, reply):  # a 429: not an attempt, not a failure
                breaker.release()
                attempt -= 1
                continue
            if reply.error is None and reply.assistant is not None:
                breaker.record_success()
                return reply
            problem = reply.error or "the worker answered without a message"
            if not reply.retryable:
                breaker.release()  # the request was wrong, not the endpoint
                raise ModelCallFailedError(self.run_id, call.key, model, attempt, problem)
            breaker.record_failure()
            self.ctx.model_faults[model] = problem
            if fall_back and reply.status == tiers.OVERLOADED:
                raise tiers.FallBack("overloaded", problem)
            if attempt >= models.attempts:
                raise ModelCallFailedError(self.run_id, call.key, model, attempt, problem)
            wait = reply.retry_after_s
            if wait is None:
                wait = full_jitter(settings.limits.retry_base_s, settings.limits.retry_max_s,
                                    attempt - 1)
            wait = min(wait, models.retry_after_cap_s)
            now = anyio.current_time()
            give_up_at = min(give_up_at, now + models.patience_s)
            if now + wait > give_up_at:
                raise ModelCallFailedError(
                    self.run_id, call.key, model, attempt,
                    f"{problem}; the endpoint did not recover within the patience of "
                    f"{models.patience_s:g} s",
                )
            log.info("model_call_retry", run_id=self.run_id, key=call.key, model=model,
                     attempt=attempt, wait_s=round(wait, 3), error=problem)
            await anyio.sleep(wait)

    async def _record_model(
        self, call: ModelCall, model: str, content: list[Block], usage: Usage, cost: float,
        latency_ms: float, decided_by: str | None,
        fallback: tuple[str, tiers.FallbackReason] | None = None,
    ) -> None:
        self.tokens += usage.total_tokens
        request: dict[str, object] = {
            "model": call.model, "role": call.role, "max_tokens": call.max_tokens,
            "since": call.stored_from, "messages": call.messages[call.stored_from:],
        }
        if fallback is not None:
            request["served_by"], request["fallback"] = fallback
        if call.stored_from == 0:
            request["system"] = call.system
            request["tools"] = [t.name for t in call.tools]
        await self.ctx.journal.record_turn(
            self.run_id, key=call.key, step=None if call.step < 0 else call.step,
            turn=None if call.turn < 0 else call.turn, purpose=call.purpose, model=model,
            request=request, response=content, usage=usage, cost_usd=cost,
            latency_ms=latency_ms,
        )
        if self.ctx.events.wants("model_call"):
            await self.ctx.events.emit(ModelCallMade(
                run_id=self.run_id, status=self.status, tokens=self.tokens,
                cost_usd=round(self.budget.spent_usd, 6), key=call.key, purpose=call.purpose,
                model=model, step=None if call.step < 0 else call.step, role=call.role,
                turn=None if call.turn < 0 else call.turn, usage=usage, call_cost_usd=cost,
                latency_ms=latency_ms, decided_by=decided_by,
                fallback=None if fallback is None else fallback[1],
            ))

    def _tools_json(self, call: ModelCall) -> msgspec.Raw:
        """The call's tool specs as JSON: the role's, encoded once per daemon, or these."""
        if not call.tools:
            return _NO_TOOLS
        if call.tools is self.ctx.tool_specs.get(call.role):
            return self.ctx.tool_specs_json[call.role]
        return msgspec.Raw(encoder.encode(call.tools))

    def _model_breaker(self, model: str) -> CircuitBreaker:
        breakers = self.ctx.model_breakers
        breaker = breakers.get(model)
        if breaker is None:
            breaker = breakers[model] = CircuitBreaker.from_settings(
                f"model:{model}", self.ctx.settings.breaker
            )
        return breaker

    # -- tool calls --------------------------------------------------------------------

    def declared(self, name: str) -> ToolDeclaration | None:
        """The parent's declarations of tool ``name``; ``None`` when it knows no such tool."""
        try:
            return self.ctx.tools.declaration(name)
        except UnknownToolError:
            return None

    async def tool(self, call: ToolCall) -> ToolCallRecord:
        """The record of ``call``: recorded, refused, substituted, or made once and recorded.

        Raises ``EffectUncertainError``, ``StepStoppedError``, ``ToolCallFailedError`` and
        ``WorkerUnreachableError``.
        """
        effect = self.effects.get(call.key)
        if effect is not None and effect.record is not None:
            return effect.record
        declared = self.declared(call.name)
        if declared is None:
            return await self._refuse(call, f"unknown tool {call.name!r}: not called")
        if call.name not in self.ctx.settings.roles[call.role].tools:
            return await self._refuse(
                call, f"tool {call.name!r} is not in the allowlist of role {call.role!r}: "
                      "not called")
        identity = (_effect_identity(call.key, call.name, call.arguments) if _once(declared)
                    else None)
        if identity is not None:
            done = self._acted.get(identity)
            if done is not None:  # an earlier attempt of this step made this very effect
                log.info("effect_not_repeated", run_id=self.run_id, key=call.key,
                         tool=call.name)
                await self._record_tool(call, done, wait=True)
                return done
        if self.ctx.interceptors:
            verdict, by = await self._decide(call)
            if isinstance(verdict, Deny):
                refused = await self._refuse(call, f"denied by {by}: {verdict.reason}", by=by)
                if verdict.ends_run is not None:
                    raise StepStoppedError(self.run_id, call.key, by, verdict.reason,
                                           verdict.ends_run)
                return refused
            if isinstance(verdict, Substitute):
                if not isinstance(verdict.result, ToolCallRecord):
                    raise TypeError(f"{by} substituted a tool call with {verdict.result!r}")
                trace_events.decided(by, "substitute", "", call.key, call.name)
                await self._record_tool(call, verdict.result, wait=declared.side_effects,
                                        by=by)
                return verdict.result
        if call.dry_run and declared.side_effects:
            # Fails closed: a dry run's effect is never made, even with no dry-run guard in
            # the chain (test_a_dry_run_without_its_guard_still_makes_no_side_effect).
            return await self._refuse(call, "dry run: no guard intercepted this "
                                            "side-effecting call; not executed")
        record = await self._make(call, declared, uncertain=effect is not None)
        if identity is not None and record.ok:
            self._acted[identity] = record
        return record

    async def _make(
        self, call: ToolCall, declared: ToolDeclaration, *, uncertain: bool
    ) -> ToolCallRecord:
        if declared.side_effects:
            if not uncertain:
                await self.ctx.journal.record_intent(
                    call.key, run_id=self.run_id, step=call.step, tool=call.name,
                    arguments=call.arguments)
            # Open until its outcome is recorded (an intent a replay found, too): a step
            # retry settles it first.
            self._open[call.key] = _OpenIntent(call, declared)
        while True:
            if uncertain and declared.side_effects and not declared.idempotent_by_key:
                acted = await self._reconcile(call, declared)
                if acted is not None:
                    return acted
            try:
                answer = await self._send(
                    call.role, call.key, self._tool_request(call, "run"),
                    wait_s=self.ctx.settings.limits.step_timeout_s,
                    certain=not declared.side_effects or declared.idempotent_by_key,
                )
            except _Uncertain:
                uncertain = True  # the request may have reached a worker: reconcile first
                continue
            assert isinstance(answer, ToolReply)
            if answer.error is not None or answer.record is None:
                # The intent stays open: the step's retry settles it first.
                raise ToolCallFailedError(self.run_id, call.key, call.name,
                                          answer.error or "no answer")
            # A call without side effects may simply run again on a replay: not waited for.
            await self._record_tool(call, answer.record, wait=declared.side_effects)
            return answer.record

    async def _reconcile(self, call: ToolCall, declared: ToolDeclaration) -> ToolCallRecord | None:
        """Whether the uncertain call acted: its record (recorded now), or ``None``."""
        if not declared.reconciles:
            raise EffectUncertainError(
                call.key, call.name, "may or may not have acted before a crash, and the "
                "tool can neither reconcile nor repeat it safely")
        answer = await self._send(call.role, call.key, self._tool_request(call, "reconcile"),
                                  wait_s=self.ctx.settings.limits.step_timeout_s)
        assert isinstance(answer, ToolReply)
        if answer.error is not None:
            raise EffectUncertainError(call.key, call.name, answer.error)
        log.info("effect_reconciled", run_id=self.run_id, key=call.key,
                 acted=answer.record is not None)
        if answer.record is not None:
            await self._record_tool(call, answer.record, wait=True)
        return answer.record

    async def settle(self) -> None:
        """Resolve every intent of this run that has no outcome yet, before a step retry.

        Reconciled when the tool can tell whether it acted; repeated under its own key
        when the tool is idempotent by key; otherwise ``EffectUncertainError``. An intent
        that had not acted is closed with a record saying so (``ok=False``), so the retry's
        own call is the only one that acts.
        """
        for key, intent in list(self._open.items()):
            call, declared = intent.call, intent.declared
            if declared.idempotent_by_key:
                await self._make(call, declared, uncertain=True)
            else:
                acted = await self._reconcile(call, declared)
                if acted is None:
                    await self._record_tool(call, ToolCallRecord(
                        name=call.name, arguments=call.arguments, ok=False,
                        output="did not act (settled before the step was retried)",
                        duration_ms=0.0,
                    ), wait=True)
                elif _once(declared):
                    self._acted[_effect_identity(key, call.name, call.arguments)] = acted
            self._open.pop(key, None)

    async def _refuse(self, call: ToolCall, reason: str, *, by: str | None = None
                      ) -> ToolCallRecord:
        record = ToolCallRecord(name=call.name, arguments=call.arguments, ok=False,
                                output=reason, duration_ms=0.0)
        log.warning("tool_call_refused", run_id=self.run_id, key=call.key, tool=call.name,
                    reason=reason)
        trace_events.decided(by or "gate", "deny", reason, call.key, call.name)
        if self.hooks.refused is not None:
            await self.hooks.refused(call, record, by)
        await self._record_tool(call, record, wait=False, by=by)
        return record

    async def _record_tool(self, call: ToolCall, record: ToolCallRecord, *, wait: bool,
                           by: str | None = None) -> None:
        self._open.pop(call.key, None)
        await self.ctx.journal.record_outcome(call.key, run_id=self.run_id, step=call.step,
                                              turn=call.turn, record=record, wait=wait)
        if self.ctx.events.wants("tool_call"):
            await self.ctx.events.emit(ToolCallMade(
                run_id=self.run_id, status=self.status, tokens=self.tokens,
                cost_usd=round(self.budget.spent_usd, 6), key=call.key, step=call.step,
                role=call.role, turn=call.turn, name=call.name, ok=record.ok,
                duration_ms=record.duration_ms, decided_by=by,
            ))

    def _tool_request(self, call: ToolCall, mode: Literal["run", "reconcile"]) -> ToolRequest:
        return ToolRequest(
            run_id=self.run_id, step=call.step, role=call.role, call_index=call.turn,
            name=call.name, arguments=call.arguments, idempotency_key=call.key, mode=mode,
            tool_call_id=call.use_id,
        )

    # -- the chain and the transport ---------------------------------------------------

    async def _decide(self, call: ModelCall | ToolCall) -> tuple[Decision, str]:
        """The first answer other than ``Allow`` in the chain, and who gave it."""
        for interceptor in self.ctx.interceptors:
            if isinstance(call, ModelCall):
                verdict = await interceptor.on_model_call(self.run_id, call)
            else:
                verdict = await interceptor.on_tool_call(self.run_id, call)
            if isinstance(verdict, Pause):
                log.info("call_paused", run_id=self.run_id, key=call.key,
                         interceptor=interceptor.name, reason=verdict.reason)
                tool = call.name if isinstance(call, ToolCall) else None
                trace_events.waiting(interceptor.name, verdict.reason, call.key, tool)
                if self.hooks.paused is not None:
                    await self.hooks.paused(verdict.reason)
                verdict = await verdict.decide()
                trace_events.waited(interceptor.name, trace_events.outcome(verdict),
                                    getattr(verdict, "reason", ""), call.key, tool)
                if self.hooks.resumed is not None:
                    await self.hooks.resumed()
            if not isinstance(verdict, Allow):
                return verdict, interceptor.name
        return ALLOW, ""

    async def _send(
        self, role: str, key: str, payload: TurnRequest | ToolRequest, *, wait_s: float,
        certain: bool = True,
    ) -> TurnReply | ToolReply:
        """Hand one request to ``role``'s executor through its breaker, waiting out an
        unreachable worker for up to ``transport_patience_s``.

        Raises ``WorkerUnreachableError`` past that patience, and ``_Uncertain`` (with
        ``certain=False``) when a request that may have been delivered got no answer.
        """
        ctx = self.ctx
        limits = ctx.settings.limits
        breaker = ctx.breakers.get(role)
        deadline = math.inf  # set at the first setback (see _attempts)
        dispatcher = ctx.dispatcher
        failures = 0
        while True:
            if breaker is not None:
                try:
                    breaker.acquire()
                except BreakerOpenError as exc:
                    wait = exc.retry_after + random.uniform(0.0, 0.1)
                    now = anyio.current_time()
                    deadline = min(deadline, now + limits.transport_patience_s)
                    if now + wait > deadline:
                        raise WorkerUnreachableError(self.run_id, key, role, str(exc)) from exc
                    await anyio.sleep(wait)
                    continue
            try:
                if isinstance(payload, TurnRequest):
                    reply: TurnReply | ToolReply = await dispatcher.model(payload,
                                                                          wait_s=wait_s)
                else:
                    reply = await dispatcher.tool(payload, wait_s=wait_s)
            except DispatchError as exc:
                if breaker is not None:
                    if exc.connection_lost:
                        breaker.release()  # a lost connection is not the worker's fault
                    else:
                        breaker.record_failure()
                if not certain and exc.maybe_delivered:
                    raise _Uncertain(exc.problem) from exc
                wait = full_jitter(limits.retry_base_s, limits.retry_max_s, failures)
                failures += 1
                now = anyio.current_time()
                deadline = min(deadline, now + limits.transport_patience_s)
                if now + wait > deadline:
                    raise WorkerUnreachableError(self.run_id, key, role, exc.problem) from exc
                log.info("worker_unreachable", run_id=self.run_id, role=role,
                         error=exc.problem)
                await anyio.sleep(wait)
                continue
            except BaseException:
                if breaker is not None:
                    breaker.release()
                raise
            if breaker is not None:
                # A model's error is the endpoint's (its own breaker counts it); a worker
                # that cannot run a tool call is the worker's.
                if isinstance(reply, ToolReply) and reply.error is not None:
                    breaker.record_failure()
                else:
                    breaker.record_success()
            return reply


def _once(declared: ToolDeclaration) -> bool:
    """Whether an effect of this tool is made once per step, whatever its retries: a side
    effect that repeating would duplicate, and that is not a check (a check re-runs)."""
    return declared.side_effects and not declared.idempotent_by_key and not declared.check


def full_jitter(base: float, cap: float, retry: int) -> float:
    """Exponential backoff with full jitter: a uniform wait up to ``base * 2**retry``,
    capped at ``cap``. The one backoff of the gate's retries and of step retries."""
    return random.uniform(0.0, min(cap, base * 2**retry))


def _content_of(result: list[Block] | str | ToolCallRecord) -> list[Block]:
    if isinstance(result, str):
        return [TextBlock(text=result)]
    if isinstance(result, ToolCallRecord):
        raise TypeError("a model call was substituted with a tool call's record")
    return result


def _effect_identity(key: str, name: str, arguments: dict[str, object]) -> tuple[str, str, bytes]:
    """What makes two tool calls the same effect: the run, epoch and step of ``key``
    (``<run>/e<epoch>/s<step>/a<attempt>/...``: the attempt left out), the tool and its
    arguments."""
    step_prefix = key.split("/a", 1)[0]
    return step_prefix, name, _args_encoder.encode(arguments)

