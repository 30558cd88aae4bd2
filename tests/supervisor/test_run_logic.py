"""The run logic on the in-memory dispatcher: no nats-server, a scripted fake model.

Plan, steps, evaluate, synthesize, the caps, the budget, replay, the call gate's order and
its interceptors answering allow / deny / pause / substitute, and model calls that fail.
The journal is a real SQLite file in the test's directory (no server is involved); the
model is a fake that answers from a function of the request and records every call; the
tools are the real registry plus a few test tools that count their own calls.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import anyio
import msgspec
import pytest
from warden.actors.errors import ModelRateLimitedError, ModelRequestError
from warden.actors.model import ModelReply, ModelRequest
from warden.actors.tools import Tool, ToolBase, ToolContext, ToolRegistry, default_registry
from warden.bus.wire import (
    Block,
    TextBlock,
    ToolCallRecord,
    ToolReply,
    ToolRequest,
    ToolUseBlock,
    TurnReply,
    TurnRequest,
    Usage,
)
from warden.config import Settings, load_settings
from warden.supervisor.context import RunContext
from warden.supervisor.dispatch import InMemoryDispatcher
from warden.supervisor.interceptors import (
    Allow,
    Decision,
    Deny,
    ModelCall,
    Pause,
    Substitute,
    ToolCall,
)
from warden.supervisor.journal import Journal, RunState, open_journal
from warden.supervisor.run import RunSupervisor, state_of_new_run

pytestmark = pytest.mark.anyio

Answer = Callable[[ModelRequest], ModelReply | Exception]
USAGE = Usage(input_tokens=100, output_tokens=20)


# -- the fakes --------------------------------------------------------------------------


@dataclass
class FakeModel:
    """Answers each call with ``answer(request)``; an exception it returns is raised."""

    answer: Answer
    requests: list[ModelRequest] = field(default_factory=list)

    async def complete(self, request: ModelRequest) -> ModelReply:
        self.requests.append(request)
        result = self.answer(request)
        if isinstance(result, Exception):
            raise result
        return result

    async def aclose(self) -> None:
        return None

    def calls(self, purpose: str) -> list[ModelRequest]:
        return [r for r in self.requests if r.purpose == purpose]


def reply(*blocks: Block, model: str = "claude-haiku-4-5") -> ModelReply:
    return ModelReply(content=list(blocks), stop_reason="end_turn", usage=USAGE, model=model)


def text(value: str) -> ModelReply:
    return reply(TextBlock(text=value))


def use(name: str, **arguments: object) -> ModelReply:
    return reply(ToolUseBlock(id=f"tu-{name}", name=name, input=dict(arguments)))


def plan_of(*steps: tuple[str, str]) -> ModelReply:
    return text(json.dumps({"steps": [{"role": r, "instruction": i} for r, i in steps]}))


def scripted(plan: ModelReply, turns: Mapping[str, list[ModelReply]],
             synthesis: str = "all done") -> Answer:
    """Plan, then each role's turns by turn number (the last repeats), then synthesis."""

    def answer(request: ModelRequest) -> ModelReply:
        if request.purpose == "plan":
            return plan
        if request.purpose == "synthesize":
            return text(synthesis)
        assert request.role is not None
        script = turns[request.role]
        turn = sum(1 for m in request.messages if m.role == "assistant")
        return script[min(turn, len(script) - 1)]

    return answer


class CountArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    text: str = ""


class CountingTool(ToolBase[CountArgs]):
    """A test tool that counts its runs; a side effect that is not idempotent."""

    name = "bump"
    description = "Count one."
    side_effects = True
    idempotent_by_key = False
    Arguments = CountArgs
    runs: ClassVar[list[str]] = []

    async def run(self, args: CountArgs, ctx: ToolContext) -> str:
        CountingTool.runs.append(ctx.idempotency_key)
        return f"bumped {len(CountingTool.runs)}"


class FailingCheck(ToolBase[CountArgs]):
    """A check (like run_tests) whose verdict the test sets."""

    name = "verify"
    description = "Check the work."
    check = True
    Arguments = CountArgs
    passes: ClassVar[bool] = False

    async def run(self, args: CountArgs, ctx: ToolContext) -> str:
        from warden.actors.errors import ToolError

        if not FailingCheck.passes:
            raise ToolError(self.name, "1 failed: test_it")
        return "1 passed"


def registry() -> ToolRegistry:
    tools: list[Tool] = [*(default_registry().get(n) for n in default_registry().names()),
                         CountingTool(), FailingCheck()]
    return ToolRegistry(tools)


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[tuple[str, ...], object] = {
        ("data_dir",): str(tmp_path / "data"),
        ("models", "provider"): "scripted",
        ("models", "planner"): "claude-haiku-4-5",
        ("roles", "research", "model"): "claude-haiku-4-5",
        ("roles", "research", "tools"): ["list_files", "echo", "bump", "verify"],
        ("roles", "code", "model"): "claude-haiku-4-5",
        ("roles", "review", "model"): "claude-haiku-4-5",
        ("limits", "retry_base_s"): 0.001,
        ("limits", "retry_max_s"): 0.002,
    }
    for dotted, value in overrides.items():
        values[tuple(dotted.split("__"))] = value
    return load_settings(env={}, overrides=values)


@dataclass
class Harness:
    settings: Settings
    journal: Journal
    model: FakeModel
    tools: ToolRegistry
    tmp_path: Path
    interceptors: list[object] = field(default_factory=list)

    def context(self) -> RunContext:
        dispatcher = InMemoryDispatcher(self.settings, self.model, self.tools,
                                        data_dir=self.tmp_path / "data")
        return RunContext.build(self.settings, self.journal, dispatcher, self.tools,
                                interceptors=self.interceptors)  # type: ignore[arg-type]

    async def run(self, run_id: str = "r-1", *, text: str = "do the thing",
                  budget_usd: float | None = None) -> str:
        await self.journal.create_run(run_id, text=text, status="queued",
                                      budget_usd=budget_usd)
        state = state_of_new_run(run_id, text, None, budget_usd)
        with anyio.fail_after(30):
            return await RunSupervisor(self.context(), state).run()


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    async with open_journal(tmp_path / "journal.sqlite") as opened:
        yield opened


def harness(tmp_path: Path, journal: Journal, answer: Answer, **overrides: object) -> Harness:
    CountingTool.runs = []
    FailingCheck.passes = False
    return Harness(settings_for(tmp_path, **overrides), journal, FakeModel(answer), registry(),
                   tmp_path)


# -- plan, steps, evaluate, synthesize --------------------------------------------------


async def test_a_run_plans_runs_each_step_turn_by_turn_and_synthesizes(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, scripted(
        plan_of(("research", "look"), ("code", "write")),
        {"research": [use("echo", text="seen"), text("found it")], "code": [text("wrote it")]},
        synthesis="the answer",
    ))

    status = await h.run()

    run = await journal.get_run("r-1")
    assert status == "succeeded"
    assert run is not None and run.result == "the answer"
    assert [(s.role, s.status, s.turns) for s in run.steps] == [
        ("research", "succeeded", 2), ("code", "succeeded", 1)]
    assert [r.purpose for r in h.model.requests] == ["plan", "step", "step", "step",
                                                     "synthesize"]
    assert await journal.tool_call_names("r-1") == ["echo"]


async def test_the_parent_builds_the_whole_model_request_from_its_config(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, scripted(plan_of(("research", "look")),
                                            {"research": [text("ok")]}),
                roles__research__prompt="You research, as configured in the parent.")

    await h.run()

    (step,) = h.model.calls("step")
    assert step.system == "You research, as configured in the parent."
    assert step.model == "claude-haiku-4-5"
    assert sorted(t.name for t in step.tools) == ["bump", "echo", "list_files", "verify"]
    assert h.model.calls("plan")[0].model == h.settings.models.planner


async def test_a_step_answering_fail_is_retried_with_the_failure_as_feedback(
    tmp_path: Path, journal: Journal
) -> None:
    answers = iter([text("FAIL: not yet"), text("done now")])
    plan = plan_of(("research", "try"))

    def answer(request: ModelRequest) -> ModelReply:
        if request.purpose == "plan":
            return plan
        if request.purpose == "synthesize":
            return text("ok")
        return next(answers)

    h = harness(tmp_path, journal, answer, limits__step_retries=1)

    assert await h.run() == "succeeded"
    retry = h.model.calls("step")[1]
    first_message = retry.messages[0].content[0]
    assert isinstance(first_message, TextBlock)
    assert "A previous attempt at this step failed" in first_message.text
    assert "FAIL: not yet" in first_message.text


async def test_a_failed_check_keeps_a_step_from_succeeding_whatever_the_model_says(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, scripted(
        plan_of(("research", "verify it")),
        {"research": [use("verify"), text("PASS: all good")]},
    ), limits__step_retries=1)

    status = await h.run()

    run = await journal.get_run("r-1")
    assert status == "failed"
    assert run is not None
    assert "check 'verify' failed" in (run.error or "")
    assert run.steps[0].status == "failed"


async def test_a_passing_check_lets_the_step_succeed(tmp_path: Path, journal: Journal) -> None:
    h = harness(tmp_path, journal, scripted(
        plan_of(("research", "verify it")),
        {"research": [use("verify"), text("PASS")]},
    ))
    FailingCheck.passes = True

    assert await h.run() == "succeeded"


# -- caps and budget --------------------------------------------------------------------


async def test_the_turn_cap_stops_a_model_that_always_wants_one_more_tool(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, scripted(plan_of(("research", "loop")),
                                            {"research": [use("echo", text="again")]}),
                limits__max_turns_per_step=3)

    status = await h.run()

    assert status == "degraded"
    assert len(h.model.calls("step")) == 3
    assert len(await journal.tool_call_names("r-1")) == 3


async def test_a_call_that_could_exceed_the_budget_is_not_made(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, scripted(
        plan_of(("research", "a"), ("research", "b"), ("research", "c")),
        {"research": [text("ok")]},
    ), models__max_tokens=64)
    full = await h.run("r-full")
    spent = (await journal.spent("r-full"))[1]
    made = len(h.model.requests)

    status = await h.run("r-small", budget_usd=spent * 0.6)

    run = await journal.get_run("r-small")
    assert full == "succeeded"
    assert status == "budget_exhausted"
    assert run is not None and run.cost_usd <= spent * 0.6
    assert 0 < len(h.model.requests) - made < made


# -- replay -----------------------------------------------------------------------------


async def test_a_replayed_run_answers_recorded_calls_from_the_journal(
    tmp_path: Path, journal: Journal
) -> None:
    # The run supervisor crashes at its synthesis call (an error that is no ModelError),
    # after the plan and the step were recorded.
    crashes = [RuntimeError("the daemon fell over")]
    plan = plan_of(("research", "bump it"))
    steps = [use("bump", text="x"), text("bumped")]

    def answer(request: ModelRequest) -> ModelReply | Exception:
        if request.purpose == "plan":
            return plan
        if request.purpose == "synthesize":
            return crashes.pop() if crashes else text("all done")
        return steps[sum(1 for m in request.messages if m.role == "assistant")]

    h = harness(tmp_path, journal, answer)
    with pytest.raises(RuntimeError, match="fell over"):
        await h.run()
    state = await journal.run_state("r-1")
    assert state is not None and state.status == "running"

    # The same run supervisor code again, from the journal: only the synthesis is new.
    assert await RunSupervisor(h.context(), state).run() == "succeeded"

    assert [r.purpose for r in h.model.requests] == ["plan", "step", "step", "synthesize",
                                                     "synthesize"]
    assert CountingTool.runs == ["r-1/e0/s0/a0/t0/c0"]


async def test_a_step_retry_does_not_repeat_an_effect_its_failed_attempt_made(
    tmp_path: Path, journal: Journal
) -> None:
    # Attempt 0 bumps, then its next turn fails; attempt 1 asks for the same bump.
    seen: list[int] = []
    plan = plan_of(("research", "bump once"))

    def answer(request: ModelRequest) -> ModelReply:
        if request.purpose == "plan":
            return plan
        if request.purpose == "synthesize":
            return text("ok")
        turn = sum(1 for m in request.messages if m.role == "assistant")
        seen.append(turn)
        if turn == 0:
            return use("bump", text="the one line")
        return text("FAIL: lost the turn") if len(seen) == 2 else text("bumped once")

    h = harness(tmp_path, journal, answer, limits__step_retries=1)

    assert await h.run() == "succeeded"
    assert CountingTool.runs == ["r-1/e0/s0/a0/t0/c0"]


# -- the gate: unknown tools and interceptors -------------------------------------------


async def test_an_unknown_tool_is_refused_before_any_intent_is_written(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, scripted(
        plan_of(("research", "call a ghost")),
        {"research": [use("ghost"), text("gave up on the ghost")]},
    ))

    assert await h.run() == "succeeded"

    effects = await journal.effects("r-1")
    (effect,) = effects.values()
    assert effect.state == "done" and effect.record is not None
    assert not effect.record.ok
    assert effect.record.output == "unknown tool 'ghost': not called"
    second_turn = h.model.calls("step")[1].messages[-1].content[0]
    assert "unknown tool 'ghost'" in getattr(second_turn, "content", "")


@dataclass
class Recording:
    """An interceptor answering from functions of the call, recording what it saw."""

    name: str = "recording"
    model_verdict: Callable[[ModelCall], Decision] = lambda call: Allow()
    tool_verdict: Callable[[ToolCall], Decision] = lambda call: Allow()
    seen: list[str] = field(default_factory=list)

    async def on_model_call(self, run_id: str, call: ModelCall) -> Decision:
        self.seen.append(f"model:{call.purpose}")
        return self.model_verdict(call)

    async def on_tool_call(self, run_id: str, call: ToolCall) -> Decision:
        self.seen.append(f"tool:{call.name}")
        return self.tool_verdict(call)


def bump_then_answer() -> Answer:
    return scripted(plan_of(("research", "bump")),
                    {"research": [use("bump", text="x"), text("done")]})


async def test_interceptors_that_allow_see_every_call_in_order(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, bump_then_answer())
    first, second = Recording(name="first"), Recording(name="second")
    h.interceptors = [first, second]

    assert await h.run() == "succeeded"

    expected = ["model:plan", "model:step", "tool:bump", "model:step", "model:synthesize"]
    assert first.seen == second.seen == expected
    assert CountingTool.runs == ["r-1/e0/s0/a0/t0/c0"]


async def test_a_denied_tool_call_is_not_made_and_the_model_is_told_why(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, bump_then_answer())
    after = Recording(name="after")
    h.interceptors = [Recording(name="policy", tool_verdict=lambda c: Deny("bumps are off")),
                      after]

    assert await h.run() == "succeeded"

    assert CountingTool.runs == []
    assert "tool:bump" not in after.seen  # the first answer other than allow decides
    told = h.model.calls("step")[1].messages[-1].content[0]
    assert getattr(told, "content", "") == "denied by policy: bumps are off"
    assert getattr(told, "is_error", False) is True


async def test_a_denied_model_call_fails_the_run_without_calling_the_model(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, bump_then_answer())
    h.interceptors = [Recording(
        name="policy",
        model_verdict=lambda c: Deny("no steps today") if c.purpose == "step" else Allow())]

    status = await h.run()

    run = await journal.get_run("r-1")
    assert status == "failed"
    assert run is not None and "denied by policy: no steps today" in (run.error or "")
    assert h.model.calls("step") == []  # and the denial was not retried as a step


async def test_a_substituted_tool_call_is_answered_and_recorded_without_running(
    tmp_path: Path, journal: Journal
) -> None:
    canned = ToolCallRecord(name="bump", arguments={"text": "x"}, ok=True,
                            output="dry run: would bump", duration_ms=0.0)
    h = harness(tmp_path, journal, bump_then_answer())
    h.interceptors = [Recording(name="dry-run", tool_verdict=lambda c: Substitute(canned))]

    assert await h.run() == "succeeded"

    assert CountingTool.runs == []
    effect = (await journal.effects("r-1"))["r-1/e0/s0/a0/t0/c0"]
    assert effect.record == canned


async def test_a_substituted_model_call_is_used_as_the_reply(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, bump_then_answer())
    h.interceptors = [Recording(
        name="cache",
        model_verdict=lambda c: Substitute("from the cache") if c.purpose == "synthesize"
        else Allow())]

    assert await h.run() == "succeeded"

    run = await journal.get_run("r-1")
    assert run is not None and run.result == "from the cache"
    assert h.model.calls("synthesize") == []


async def test_a_paused_call_waits_for_its_decision_with_the_run_awaiting_approval(
    tmp_path: Path, journal: Journal
) -> None:
    waiting, decided = anyio.Event(), anyio.Event()
    statuses: list[str | None] = []

    async def decide() -> Allow:
        statuses.append(await journal.run_status("r-1"))
        waiting.set()
        await decided.wait()
        return Allow()

    h = harness(tmp_path, journal, bump_then_answer())
    h.interceptors = [Recording(
        name="approvals",
        tool_verdict=lambda c: Pause("a bump needs a yes", decide))]

    async with anyio.create_task_group() as tg:
        results: list[str] = []

        async def run() -> None:
            results.append(await h.run())

        tg.start_soon(run)
        with anyio.fail_after(10):
            await waiting.wait()
        assert CountingTool.runs == []
        decided.set()

    assert statuses == ["awaiting_approval"]
    assert results == ["succeeded"]
    assert CountingTool.runs == ["r-1/e0/s0/a0/t0/c0"]


# -- model calls that fail --------------------------------------------------------------


def failing_plan(error: Exception) -> Answer:
    return lambda request: error if request.purpose == "plan" else text("unused")


async def test_a_rate_limited_call_makes_at_most_its_attempts_then_fails_the_run(
    tmp_path: Path, journal: Journal
) -> None:
    error = ModelRateLimitedError("claude-haiku-4-5", "rate_limit_error: slow down",
                                  retry_after=0.01)
    h = harness(tmp_path, journal, failing_plan(error), models__attempts=3)

    status = await h.run()

    run = await journal.get_run("r-1")
    assert status == "failed"
    assert len(h.model.requests) == 3
    assert run is not None
    assert "failed after 3 attempts" in (run.error or "")
    assert "slow down" in (run.error or "")


async def test_a_refusal_no_retry_repairs_ends_the_run_after_one_request(
    tmp_path: Path, journal: Journal
) -> None:
    error = ModelRequestError("claude-haiku-4-5", "enforced_spend_limit_reached", status=429)
    h = harness(tmp_path, journal, failing_plan(error))

    status = await h.run()

    run = await journal.get_run("r-1")
    assert status == "failed"
    assert len(h.model.requests) == 1
    assert run is not None and "spend_limit" in (run.error or "")


async def test_a_retry_after_longer_than_the_patience_fails_at_once(
    tmp_path: Path, journal: Journal
) -> None:
    error = ModelRateLimitedError("claude-haiku-4-5", "busy", retry_after=5.0)
    h = harness(tmp_path, journal, failing_plan(error), models__patience_s=1.0,
                models__retry_after_cap_s=30.0)

    with anyio.fail_after(3):
        status = await h.run()

    assert status == "failed"
    assert len(h.model.requests) == 1


async def test_an_outage_shorter_than_the_patience_is_waited_out(
    tmp_path: Path, journal: Journal
) -> None:
    outage = iter([ModelRateLimitedError("claude-haiku-4-5", "busy", retry_after=0.01)] * 2)
    plan = plan_of(("research", "look"))

    def answer(request: ModelRequest) -> ModelReply | Exception:
        if request.purpose == "plan":
            return next(outage, plan)
        return text("fine")

    h = harness(tmp_path, journal, answer)

    assert await h.run() == "succeeded"
    assert len(h.model.calls("plan")) == 3


async def test_the_model_endpoint_breaker_opens_and_fails_fast(
    tmp_path: Path, journal: Journal
) -> None:
    error = ModelRateLimitedError("claude-haiku-4-5", "busy", retry_after=0.001)
    h = harness(tmp_path, journal, failing_plan(error), models__attempts=4,
                breaker__failure_threshold=2, breaker__cooldown_s=60.0,
                models__patience_s=1.0)
    context = h.context()
    h.context = lambda: context  # type: ignore[method-assign]  # one breaker for both runs

    assert await h.run("r-1") == "failed"
    assert len(h.model.requests) == 2  # the breaker opened after two failures
    assert await h.run("r-2") == "failed"

    assert len(h.model.requests) == 2  # open: the second run sent nothing
    run = await journal.get_run("r-2")
    assert run is not None and "circuit breaker 'model:claude-haiku-4-5' is open" in (
        run.error or "")


# -- settling what a failed attempt left open --------------------------------------------


class LedgerArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    line: str


class Ledger(ToolBase[LedgerArgs]):
    """A side effect that is not idempotent but can tell whether a key already acted."""

    name = "ledger"
    description = "Append a line."
    side_effects = True
    idempotent_by_key = False
    reconciles = True
    Arguments = LedgerArgs
    lines: ClassVar[dict[str, str]] = {}

    async def run(self, args: LedgerArgs, ctx: ToolContext) -> str:
        Ledger.lines[ctx.idempotency_key] = args.line
        return "appended"

    async def reconcile(self, arguments: Mapping[str, object], ctx: ToolContext) -> str | None:
        return "appended" if ctx.idempotency_key in Ledger.lines else None


@dataclass
class CrashAfterActing:
    """A dispatcher whose worker acts on the first ledger call, then crashes before it
    answers (as a NATS worker does: it replies with the crash)."""

    inner: InMemoryDispatcher
    crashed: int = 0

    async def model(self, request: TurnRequest, *, wait_s: float) -> TurnReply:
        return await self.inner.model(request, wait_s=wait_s)

    async def tool(self, request: ToolRequest, *, wait_s: float) -> ToolReply:
        reply = await self.inner.tool(request, wait_s=wait_s)
        if request.name == "ledger" and request.mode == "run" and not self.crashed:
            self.crashed += 1
            return ToolReply(run_id=request.run_id, idempotency_key=request.idempotency_key,
                             error="worker 'research' crashed: RuntimeError('after acting')")
        return reply


async def test_a_step_retry_settles_an_open_intent_and_does_not_repeat_its_effect(
    tmp_path: Path, journal: Journal
) -> None:
    Ledger.lines = {}
    h = harness(tmp_path, journal, scripted(
        plan_of(("research", "append once")),
        {"research": [use("ledger", line="the one line"), text("appended")]},
    ), roles__research__tools=["ledger"], limits__step_retries=1)
    defaults = default_registry()
    h.tools = ToolRegistry([*(defaults.get(n) for n in defaults.names()), Ledger()])
    crashing = CrashAfterActing(InMemoryDispatcher(h.settings, h.model, h.tools,
                                                   data_dir=tmp_path / "data"))
    context = RunContext.build(h.settings, journal, crashing, h.tools)

    status = await RunSupervisor(context, await created(journal, "r-1")).run()

    assert status == "succeeded"
    assert crashing.crashed == 1
    assert list(Ledger.lines) == ["r-1/e0/s0/a0/t0/c0"]  # acted once, under the first key
    effects = await journal.effects("r-1")
    assert effects["r-1/e0/s0/a0/t0/c0"].record is not None  # settled by reconcile
    assert effects["r-1/e0/s0/a1/t0/c0"].record == effects["r-1/e0/s0/a0/t0/c0"].record


async def created(journal: Journal, run_id: str) -> RunState:
    await journal.create_run(run_id, text="do the thing", status="queued")
    return state_of_new_run(run_id, "do the thing", None, None)
