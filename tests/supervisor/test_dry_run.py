"""Dry runs (``supervisor/dry_run.py``), driven through whole runs on the in-memory
dispatcher with the daemon's guard chain: a side-effecting call is intercepted, recorded
and answered (its simulation, or "dry run: not executed"), never executed; a read-only
call runs; a refusal is recorded as one; a dry run's keys are not a real run's."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from warden.actors.errors import ToolError
from warden.actors.model import ModelReply
from warden.actors.tools import Tool, ToolContext, ToolRegistry
from warden.bus.wire import InterceptedCall, RunSummary, ToolResultBlock, encoder
from warden.supervisor.api import fit_run
from warden.supervisor.dispatch import InMemoryDispatcher
from warden.supervisor.dry_run import NOT_EXECUTED, DryRunGuard, dry_run_id
from warden.supervisor.intake import Rejection, check_submission
from warden.supervisor.journal import Journal
from warden.supervisor.policy import policy_guards
from warden.supervisor.run import RunSupervisor, state_of_new_run

from tests.supervisor.run_fakes import (
    Answer,
    CountArgs,
    CountingTool,
    Harness,
    harness,
    plan_of,
    registry,
    scripted,
    settings_for,
    text,
    use,
)

pytestmark = pytest.mark.anyio

TOOLS = ["list_files", "echo", "bump", "verify", "ledger_append", "preview", "run_tests"]


class PreviewTool(CountingTool):
    """A side effect that simulates: ``simulate`` says what it would do, or fails."""

    name = "preview"
    description = "Count one, or say what counting would do."
    simulates = True
    fails: ClassVar[bool] = False

    async def simulate(self, arguments: object, ctx: ToolContext) -> str:
        if PreviewTool.fails:
            raise ToolError(self.name, "the preview service is down")
        args = self.parse(arguments)  # type: ignore[arg-type]
        assert isinstance(args, CountArgs)
        return f"would count {args.text!r} under {ctx.idempotency_key}"


def tools_with_preview() -> ToolRegistry:
    tools: list[Tool] = [*(registry().get(n) for n in registry().names()), PreviewTool()]
    return ToolRegistry(tools)


def dry_harness(tmp_path: Path, journal: Journal, answer: Answer, **overrides: object
                ) -> Harness:
    """A harness whose interceptors are the daemon's chain (``policy_guards``), the dry
    run guard last, simulating on the in-memory dispatcher."""
    h = harness(tmp_path, journal, answer, roles__research__tools=TOOLS, **overrides)
    h.tools = tools_with_preview()
    PreviewTool.fails = False
    dispatcher = InMemoryDispatcher(h.settings, h.model, h.tools, data_dir=tmp_path / "data")
    h.interceptors = list(policy_guards(h.settings, h.tools, journal, dispatcher))
    return h


async def run(h: Harness, run_id: str, *, dry_run: bool) -> RunSummary:
    """Commit and run one run to its end, as the intake does; the run as ``show`` has it."""
    await h.journal.create_run(run_id, text="do it", status="queued", dry_run=dry_run)
    state = state_of_new_run(run_id, "do it", None, None, dry_run=dry_run)
    await RunSupervisor(h.context(), state).run()
    summary = await h.journal.get_run(run_id)
    assert summary is not None
    return summary


def calls_then(*calls: ModelReply, answer: str = "done") -> Answer:
    """One research step whose model asks for each of ``calls`` in a turn of its own,
    then answers."""
    return scripted(plan_of(("research", "act")), {"research": [*calls, text(answer)]})


def told(h: Harness, turn: int = 1) -> list[ToolResultBlock]:
    """The tool results the model read at ``turn`` of the step."""
    content = h.model.calls("step")[turn].messages[-1].content
    return [b for b in content if isinstance(b, ToolResultBlock)]


# -- interception -----------------------------------------------------------------------


async def test_a_side_effecting_call_of_a_dry_run_is_recorded_and_not_executed(
    tmp_path: Path, journal: Journal
) -> None:
    h = dry_harness(tmp_path, journal, calls_then(use("bump", text="x")))

    run_summary = await run(h, "dry-r-1", dry_run=True)

    assert run_summary.status == "succeeded"
    assert CountingTool.runs == []
    assert [b.content for b in told(h)] == [NOT_EXECUTED]
    assert run_summary.dry_run
    (call,) = run_summary.intercepted
    assert (call.key, call.tool, call.arguments, call.decision, call.output, call.simulated) \
        == ("dry-r-1/e0/s0/a0/t0/c0", "bump", {"text": "x"}, "intercepted", NOT_EXECUTED,
            False)
    assert call.reason == "passed every guard (policy.blocked_patterns, policy.loop, approval)"


async def test_a_tool_that_simulates_answers_a_dry_run_with_its_simulation(
    tmp_path: Path, journal: Journal
) -> None:
    h = dry_harness(tmp_path, journal, calls_then(use("preview", text="y")))

    run_summary = await run(h, "dry-r-1", dry_run=True)

    assert CountingTool.runs == []
    expected = "would count 'y' under dry-r-1/e0/s0/a0/t0/c0"
    assert [b.content for b in told(h)] == [expected]
    (call,) = run_summary.intercepted
    assert (call.output, call.simulated) == (expected, True)


async def test_the_ledger_is_untouched_by_a_dry_run_and_says_what_it_would_append(
    tmp_path: Path, journal: Journal
) -> None:
    h = dry_harness(tmp_path, journal, calls_then(use("ledger_append", text="a line")))

    run_summary = await run(h, "dry-r-1", dry_run=True)

    assert not (tmp_path / "data" / "ledger.txt").exists()
    (call,) = run_summary.intercepted
    assert call.simulated
    assert call.output == "would append to ledger.txt as dry-r-1/e0/s0/a0/t0/c0: 'a line'"


async def test_a_simulation_that_fails_is_not_executed_and_says_why(
    tmp_path: Path, journal: Journal
) -> None:
    h = dry_harness(tmp_path, journal, calls_then(use("preview", text="y")))
    PreviewTool.fails = True

    run_summary = await run(h, "dry-r-1", dry_run=True)

    assert run_summary.status == "succeeded"
    assert CountingTool.runs == []
    (call,) = run_summary.intercepted
    assert not call.simulated
    assert call.output == (f"{NOT_EXECUTED} (its simulation failed: tool 'preview': "
                           "the preview service is down)")


async def test_a_read_only_tool_runs_in_a_dry_run_and_is_not_listed(
    tmp_path: Path, journal: Journal
) -> None:
    h = dry_harness(tmp_path, journal, calls_then(use("echo", text="hello")))

    run_summary = await run(h, "dry-r-1", dry_run=True)

    assert [b.content for b in told(h)] == ["hello"]
    assert run_summary.dry_run and run_summary.intercepted == []


async def test_a_real_run_is_not_intercepted_by_the_dry_run_guard(
    tmp_path: Path, journal: Journal
) -> None:
    h = dry_harness(tmp_path, journal, calls_then(use("bump", text="x")))

    run_summary = await run(h, "r-1", dry_run=False)

    assert CountingTool.runs == ["r-1/e0/s0/a0/t0/c0"]
    assert not run_summary.dry_run and run_summary.intercepted == []


async def test_an_intercepted_check_does_not_fail_its_step(
    tmp_path: Path, journal: Journal
) -> None:
    # run_tests declares side effects (it runs model-written code): a dry run runs no
    # code, and a check whose outcome is unknown has not failed.
    h = dry_harness(tmp_path, journal, calls_then(use("run_tests", path="missing")))

    run_summary = await run(h, "dry-r-1", dry_run=True)

    assert run_summary.status == "succeeded"
    assert run_summary.steps[0].status == "succeeded"
    (call,) = run_summary.intercepted
    assert (call.tool, call.output) == ("run_tests", NOT_EXECUTED)


# -- refusals ---------------------------------------------------------------------------


async def test_a_call_an_earlier_guard_refused_is_recorded_as_refused(
    tmp_path: Path, journal: Journal
) -> None:
    h = dry_harness(tmp_path, journal, calls_then(use("bump", text="rm -rf /")))

    run_summary = await run(h, "dry-r-1", dry_run=True)

    assert CountingTool.runs == []
    (call,) = run_summary.intercepted
    assert (call.tool, call.decision, call.by) == ("bump", "refused", "policy.blocked_patterns")
    assert call.output.startswith("denied by policy.blocked_patterns: blocked pattern "
                                  "shell.rm_rf matched")
    assert [b.content for b in told(h)] == [call.output]  # what the model read


async def test_a_call_outside_the_allowlist_is_recorded_as_refused_by_the_gate(
    tmp_path: Path, journal: Journal
) -> None:
    h = dry_harness(tmp_path, journal, calls_then(use("write_file", path="a", content="b")))

    run_summary = await run(h, "dry-r-1", dry_run=True)

    (call,) = run_summary.intercepted
    assert (call.tool, call.decision, call.by) == ("write_file", "refused", "gate")
    assert "not in the allowlist of role 'research'" in call.output


async def test_a_dry_run_counts_its_intercepted_calls_against_the_run_limits(
    tmp_path: Path, journal: Journal
) -> None:
    h = dry_harness(tmp_path, journal,
                    calls_then(use("bump", text="1"), use("bump", text="2")),
                    policy__max_side_effects_per_run=1)

    run_summary = await run(h, "dry-r-1", dry_run=True)

    assert CountingTool.runs == []
    first, second = run_summary.intercepted
    assert (first.decision, second.decision) == ("intercepted", "refused")
    assert second.by == "policy.magnitude"
    assert "policy.max_side_effects_per_run = 1" in second.output


# -- the chain, and keys ----------------------------------------------------------------


async def test_the_dry_run_guard_is_last_and_names_the_guards_before_it(
    tmp_path: Path, journal: Journal
) -> None:
    settings = settings_for(tmp_path, policy__max_side_effects_per_run=5)

    guards = policy_guards(settings, registry(), journal)

    names = [guard.name for guard in guards]
    assert names == ["policy.blocked_patterns", "policy.magnitude", "policy.loop", "approval",
                     "dry_run"]
    assert isinstance(guards[-1], DryRunGuard)
    assert guards[-1].passed == ("policy.blocked_patterns", "policy.magnitude", "policy.loop",
                                 "approval")


class RiskyBump(CountingTool):
    """A side effect of high risk: a real run waits for a person before it."""

    name = "risky_bump"
    risk = "high"


async def test_a_dry_run_records_a_call_that_would_wait_for_approval_and_asks_no_one(
    tmp_path: Path, journal: Journal
) -> None:
    h = harness(tmp_path, journal, calls_then(use("risky_bump", text="x")),
                roles__research__tools=[*TOOLS, "risky_bump"])
    h.tools = ToolRegistry([*(tools_with_preview().get(n) for n in tools_with_preview().names()),
                            RiskyBump()])
    h.interceptors = list(policy_guards(h.settings, h.tools, journal))

    run_summary = await run(h, "dry-r-9", dry_run=True)

    assert run_summary.status == "succeeded"  # no pause: nobody was asked
    assert CountingTool.runs == []
    assert await journal.approvals(status=None) == []
    (call,) = run_summary.intercepted
    assert call.reason.endswith("; would have waited for a person's approval: "
                                "risk high: always needs an approval")


async def test_a_dry_run_and_a_real_run_of_one_submission_share_no_key_or_effect(
    tmp_path: Path, journal: Journal
) -> None:
    h = dry_harness(tmp_path, journal, calls_then(use("bump", text="x")))
    data = encoder.encode({"id": "same", "text": "do it"})
    dry_data = encoder.encode({"id": "same", "text": "do it", "dry_run": True})
    real_checked = check_submission(data, max_bytes=1000, fallback_id="t-1")
    dry_checked = check_submission(dry_data, max_bytes=1000, fallback_id="t-2")
    assert not isinstance(real_checked, Rejection) and not isinstance(dry_checked, Rejection)
    real_id, dry_id = real_checked[0], dry_checked[0]

    dry = await run(h, dry_id, dry_run=True)
    real = await run(h, real_id, dry_run=False)

    assert (real_id, dry_id) == ("same", "dry-same")
    real_keys = set(await journal.effects(real_id))
    dry_keys = set(await journal.effects(dry_id))
    assert real_keys == {"same/e0/s0/a0/t0/c0"} and dry_keys == {"dry-same/e0/s0/a0/t0/c0"}
    assert CountingTool.runs == ["same/e0/s0/a0/t0/c0"]  # the real run's, made once
    assert [c.key for c in dry.intercepted] == ["dry-same/e0/s0/a0/t0/c0"]
    assert not real.dry_run and dry.dry_run


def test_a_dry_run_id_is_prefixed_once() -> None:
    assert dry_run_id("r-1") == "dry-r-1"
    assert dry_run_id("dry-r-1") == "dry-r-1"


@pytest.mark.parametrize(("submission", "fallback", "run_id"), [
    ({"id": "abc", "text": "t", "dry_run": True}, "t-1", "dry-abc"),
    ({"id": "dry-abc", "text": "t", "dry_run": True}, "t-1", "dry-abc"),
    ({"text": "t", "dry_run": True}, "t-5", "dry-t-5"),
    ({"id": "abc", "text": "t"}, "t-1", "abc"),
])
def test_a_submission_maps_to_its_run_id(submission: dict[str, object], fallback: str,
                                         run_id: str) -> None:
    checked = check_submission(encoder.encode(submission), max_bytes=1000,
                               fallback_id=fallback)

    assert not isinstance(checked, Rejection)
    assert checked[0] == run_id
    assert checked[1].dry_run == bool(submission.get("dry_run"))


@pytest.mark.parametrize(("submission", "problem"), [
    ({"id": "dry-abc", "text": "t"}, "starts with 'dry-', which only dry runs' ids do"),
    ({"id": "a" * 126, "text": "t", "dry_run": True}, "is too long for a dry run"),
])
def test_an_id_that_would_mix_dry_and_real_runs_is_rejected_naming_the_field(
    submission: dict[str, object], problem: str
) -> None:
    checked = check_submission(encoder.encode(submission), max_bytes=1000, fallback_id="t-1")

    assert isinstance(checked, Rejection)
    assert checked.field == "id" and problem in checked.error
    assert checked.run_id == "t-1"


# -- durability and show ----------------------------------------------------------------


async def test_a_dry_run_is_remembered_by_the_journal(journal: Journal) -> None:
    await journal.create_run("dry-r-1", text="t", status="queued", dry_run=True)
    await journal.create_run("r-1", text="t", status="queued")

    state = await journal.run_state("dry-r-1")
    unfinished = {s.id: s.dry_run for s in await journal.unfinished_runs()}

    assert state is not None and state.dry_run
    assert unfinished == {"dry-r-1": True, "r-1": False}


async def test_a_replayed_dry_run_is_still_intercepted(
    tmp_path: Path, journal: Journal
) -> None:
    # Two steps; the run supervisor crashes after the first, and the journal's state
    # (dry_run included) is what the replay starts from.
    h = dry_harness(tmp_path, journal, scripted(
        plan_of(("research", "one"), ("research", "two")),
        {"research": [use("bump", text="x"), text("done")]}))
    await journal.create_run("dry-r-1", text="do it", status="queued", dry_run=True)
    first = RunSupervisor(h.context(), state_of_new_run("dry-r-1", "do it", None, None,
                                                        dry_run=True))
    real_steps = first._run_attempt
    attempts: list[int] = []

    async def crash_on_second_step(index: int, *args: object) -> str:
        attempts.append(index)
        if index == 1:
            raise RuntimeError("crash")
        return await real_steps(index, *args)  # type: ignore[arg-type]

    first._run_attempt = crash_on_second_step  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await first.run()
    await journal.sync()  # as the daemon does before a replay
    state = await journal.run_state("dry-r-1")
    assert state is not None and state.dry_run

    assert await RunSupervisor(h.context(), state).run() == "succeeded"

    assert CountingTool.runs == []
    summary = await journal.get_run("dry-r-1")
    assert summary is not None
    assert [c.key for c in summary.intercepted] == ["dry-r-1/e0/s0/a0/t0/c0",
                                                    "dry-r-1/e0/s1/a0/t0/c0"]


def test_show_cuts_a_dry_runs_intercepted_outputs_to_fit() -> None:
    calls = [InterceptedCall(key=f"dry-r/e0/s0/a0/t{i}/c0", step=0, turn=i, tool="bump",
                             decision="intercepted", output="o" * 5000)
             for i in range(20)]
    run_summary = RunSummary(id="dry-r", status="succeeded", text="t", created_at=0.0,
                             updated_at=0.0, dry_run=True, intercepted=calls)

    fitted = fit_run(run_summary, 16_000)

    assert len(encoder.encode(fitted)) <= 16_000
    assert fitted.truncated and fitted.dry_run
    assert [c.key for c in fitted.intercepted] == [c.key for c in calls]



async def test_a_dry_run_without_its_guard_still_makes_no_side_effect(
    tmp_path: Path, journal: Journal
) -> None:
    h = dry_harness(tmp_path, journal, calls_then(use("bump", text="x"), use("echo", text="e")))
    h.interceptors = []  # no DryRunGuard: the gate itself refuses

    run_summary = await run(h, "dry-r-1", dry_run=True)

    assert CountingTool.runs == []
    assert [b.content for b in told(h, 1) + told(h, 2)] == [
        "dry run: no guard intercepted this side-effecting call; not executed", "e"]
    (call,) = run_summary.intercepted
    assert (call.tool, call.decision, call.by) == ("bump", "refused", "gate")
