"""The run logic on the in-memory dispatcher: no nats-server, a scripted fake model.

Plan, steps, evaluate (checks), synthesize, the caps, the budget, replay, and what a step
retry does with the effects of the attempt it replaces. The journal is a real SQLite file
in the test's directory; the fakes are in ``run_fakes.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import msgspec
import pytest
from warden.actors.model import ModelReply, ModelRequest
from warden.actors.tools import ToolBase, ToolContext, ToolRegistry, default_registry
from warden.bus.wire import (
    TextBlock,
    ToolReply,
    ToolRequest,
    TurnReply,
    TurnRequest,
)
from warden.supervisor.context import RunContext
from warden.supervisor.dispatch import InMemoryDispatcher
from warden.supervisor.journal import Journal, RunState
from warden.supervisor.run import RunSupervisor, state_of_new_run

from tests.supervisor.run_fakes import (
    CountingTool,
    FailingCheck,
    harness,
    plan_of,
    scripted,
    text,
    use,
)

pytestmark = pytest.mark.anyio



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
