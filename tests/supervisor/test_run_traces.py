"""The spans of one run, pinned with the in-memory exporter: names, parents, GenAI
attributes, and the events of policy decisions and approval waits (``actors/tracing.py``).

Each run is the scripted model's ``ledger`` scenario (a plan of three steps, research →
code → review, each appending one ledger line with a tool call and then answering) on
the in-memory dispatcher, with the daemon's guard chain.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from warden.actors import ScriptedModel
from warden.actors import genai_attributes as ga
from warden.actors.otel_tracing import trace_id_of
from warden.actors.tools import default_registry
from warden.actors.tracing import open_tracing, provider_of
from warden.config import load_settings
from warden.supervisor.context import RunContext
from warden.supervisor.dispatch import InMemoryDispatcher
from warden.supervisor.interceptors import ALLOW, Decision, ModelCall, Pause, ToolCall
from warden.supervisor.journal import Journal
from warden.supervisor.policy import policy_guards
from warden.supervisor.run import RunSupervisor, state_of_new_run

pytestmark = pytest.mark.anyio

CONTENT_KEYS = {ga.SYSTEM_INSTRUCTIONS, ga.INPUT_MESSAGES, ga.OUTPUT_MESSAGES,
                ga.TOOL_CALL_ARGUMENTS, ga.TOOL_CALL_RESULT, ga.WARDEN_REASON}


@dataclass
class PauseEachTool:
    """An interceptor that makes every tool call wait for a decision that approves it."""

    name: str = "test.pause"

    async def on_model_call(self, run_id: str, call: ModelCall) -> Decision:
        return ALLOW

    async def on_tool_call(self, run_id: str, call: ToolCall) -> Decision:
        async def decide() -> Decision:
            return ALLOW

        return Pause(f"waiting on {call.name}", decide)  # type: ignore[arg-type]


async def traced_run(
    tmp_path: Path, journal: Journal, *, run_id: str = "r-1", dry_run: bool = False,
    capture: bool = False, extra: Callable[[], object] | None = None,
    **overrides: object,
) -> tuple[str, list[ReadableSpan]]:
    """One ledger run with tracing on; its status and every span it finished."""
    values: dict[tuple[str, ...], object] = {
        ("data_dir",): str(tmp_path / "data"), ("models", "provider"): "scripted",
        ("tracing", "enabled"): True, ("tracing", "capture_content"): capture,
    }
    values |= {tuple(k.split("__")): v for k, v in overrides.items()}
    settings = load_settings(env={}, overrides=values)
    model = ScriptedModel()
    tools = default_registry()
    dispatcher = InMemoryDispatcher(settings, model, tools, data_dir=tmp_path / "data")
    guards = [*policy_guards(settings, tools, journal, dispatcher)]
    if extra is not None:
        guards.insert(0, extra())  # type: ignore[arg-type]
    ctx = RunContext.build(settings, journal, dispatcher, tools, interceptors=guards)
    exporter = InMemorySpanExporter()
    async with open_tracing(settings.tracing, service="warden", provider=provider_of(model),
                            environ={}, exporter=exporter):
        await journal.create_run(run_id, text="keep the ledger", status="queued",
                                 scenario="ledger", dry_run=dry_run)
        state = state_of_new_run(run_id, "keep the ledger", "ledger", None, dry_run=dry_run)
        status = await RunSupervisor(ctx, state).run()
    return status, list(exporter.get_finished_spans())


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def attrs(span: ReadableSpan) -> Mapping[str, object]:
    assert span.attributes is not None
    return span.attributes


def events(span: ReadableSpan, name: str) -> list[Mapping[str, object]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


async def test_one_run_is_one_trace_of_workflow_plan_agent_chat_and_tool_spans(
        tmp_path: Path, journal: Journal) -> None:
    status, spans = await traced_run(tmp_path, journal)
    assert status == "succeeded"
    assert Counter(s.name for s in spans) == {
        "invoke_workflow warden": 1, "plan planner": 1,
        "invoke_agent research": 1, "invoke_agent code": 1, "invoke_agent review": 1,
        # plan and synthesis by the planner (sonnet), two turns of each step
        "chat claude-sonnet-4-6": 2 + 2, "chat claude-haiku-4-5": 2 + 2,
        "execute_tool ledger_append": 3,
    }
    assert {s.context.trace_id for s in spans} == {trace_id_of("r-1")}
    [root] = named(spans, "invoke_workflow warden")
    by_id = {s.context.span_id: s for s in spans}
    assert root.parent is None and root.kind == SpanKind.INTERNAL
    # Every step's chat and tool spans are children of that step's span.
    for role in ("research", "code", "review"):
        [step] = named(spans, f"invoke_agent {role}")
        assert step.parent is not None and step.parent.span_id == root.context.span_id
        children = sorted(s.name for s in spans
                          if s.parent is not None and s.parent.span_id == step.context.span_id)
        model = "claude-sonnet-4-6" if role == "code" else "claude-haiku-4-5"
        assert children == [f"chat {model}", f"chat {model}", "execute_tool ledger_append"]
        assert attrs(step)[ga.AGENT_NAME] == role
        assert attrs(step)[ga.OPERATION_NAME] == "invoke_agent"
        assert attrs(step)[ga.PROVIDER_NAME] == "warden.scripted"
        assert attrs(step)[ga.REQUEST_MODEL] == model
    plan_chats = [s for s in spans if attrs(s).get(ga.WARDEN_PURPOSE) == "plan"]
    synth_chats = [s for s in spans if attrs(s).get(ga.WARDEN_PURPOSE) == "synthesize"]
    assert [by_id[s.parent.span_id].name for s in plan_chats if s.parent] == ["plan planner"]
    assert [by_id[s.parent.span_id].name for s in synth_chats if s.parent] == [
        "invoke_workflow warden"]
    assert all(s.parent.span_id in by_id for s in spans if s.parent is not None)
    # The run span says how it ended, and what it spent, as the journal counts it.
    tokens, cost = await journal.spent("r-1")
    assert attrs(root)[ga.WARDEN_RUN_STATUS] == "succeeded"
    assert attrs(root)[ga.WARDEN_TOKENS] == tokens
    assert attrs(root)[ga.WARDEN_COST_USD] == pytest.approx(cost, abs=1e-6)
    assert attrs(root)[ga.CONVERSATION_ID] == "r-1"
    assert attrs(root)[ga.WORKFLOW_NAME] == "warden"
    assert root.status.status_code == StatusCode.UNSET
    assert [e[ga.WARDEN_RUN_STATUS] for e in events(root, ga.EVENT_RUN_STATUS)] == [
        "planning", "running", "succeeded"]
    # Not a word of content unless asked for.
    assert not [k for s in spans for k in attrs(s) if k in CONTENT_KEYS]


async def test_a_chat_span_carries_the_request_and_usage_attributes(
        tmp_path: Path, journal: Journal) -> None:
    _, spans = await traced_run(tmp_path, journal)
    chats = [s for s in spans if s.name.startswith("chat ")]
    first = next(s for s in chats if attrs(s).get(ga.WARDEN_STEP) == 0
                 and attrs(s).get(ga.WARDEN_TURN) == 0)
    a = attrs(first)
    assert first.kind == SpanKind.CLIENT
    assert a[ga.OPERATION_NAME] == "chat"
    assert a[ga.PROVIDER_NAME] == "warden.scripted"
    assert a[ga.REQUEST_MODEL] == a[ga.RESPONSE_MODEL] == "claude-haiku-4-5"
    assert a[ga.REQUEST_MAX_TOKENS] == 2048
    assert a[ga.RESPONSE_FINISH_REASONS] == ("tool_use",)
    assert isinstance(a[ga.USAGE_INPUT_TOKENS], int) and a[ga.USAGE_INPUT_TOKENS] > 0
    assert isinstance(a[ga.USAGE_OUTPUT_TOKENS], int) and a[ga.USAGE_OUTPUT_TOKENS] > 0
    assert a[ga.USAGE_CACHE_READ_INPUT_TOKENS] == a[ga.USAGE_CACHE_CREATION_INPUT_TOKENS] == 0
    assert a[ga.CONVERSATION_ID] == "r-1"
    # Every token the journal counted is on exactly one chat span (nothing twice).
    tokens, _ = await journal.spent("r-1")
    assert sum(int(attrs(s)[ga.USAGE_INPUT_TOKENS])  # type: ignore[call-overload]
               + int(attrs(s)[ga.USAGE_OUTPUT_TOKENS])  # type: ignore[call-overload]
               for s in chats) == tokens
    [tool] = [s for s in spans if s.name == "execute_tool ledger_append"
              and attrs(s)[ga.WARDEN_STEP] == 0]
    t = attrs(tool)
    assert t[ga.OPERATION_NAME] == "execute_tool"
    assert t[ga.TOOL_NAME] == "ledger_append"
    assert t[ga.TOOL_TYPE] == "function"
    assert t[ga.TOOL_CALL_ID] == "toolu_000_00"
    assert t[ga.WARDEN_CALL_KEY] == "r-1/e0/s0/a0/t0/c0"
    assert t[ga.WARDEN_TOOL_MODE] == "run"
    assert tool.status.status_code == StatusCode.UNSET


async def test_content_is_on_the_spans_only_when_asked_for(
        tmp_path: Path, journal: Journal) -> None:
    _, spans = await traced_run(tmp_path, journal, capture=True)
    first = next(s for s in spans if s.name.startswith("chat ")
                 and attrs(s).get(ga.WARDEN_STEP) == 0 and attrs(s).get(ga.WARDEN_TURN) == 1)
    messages = json.loads(str(attrs(first)[ga.INPUT_MESSAGES]))
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["parts"][0] == {"type": "tool_call", "id": "toolu_000_00",
                                       "name": "ledger_append",
                                       "arguments": {"text": "research"}}
    assert messages[2]["parts"][0]["type"] == "tool_call_response"
    [output] = json.loads(str(attrs(first)[ga.OUTPUT_MESSAGES]))
    assert output["role"] == "assistant" and output["finish_reason"] == "end_turn"
    assert output["parts"][0]["content"].startswith("appended:")
    system = json.loads(str(attrs(first)[ga.SYSTEM_INSTRUCTIONS]))
    assert system[0]["type"] == "text" and "research worker" in system[0]["content"]
    [tool] = [s for s in spans if s.name == "execute_tool ledger_append"
              and attrs(s)[ga.WARDEN_STEP] == 0]
    assert json.loads(str(attrs(tool)[ga.TOOL_CALL_ARGUMENTS])) == {"text": "research"}
    assert "r-1/e0/s0/a0/t0/c0" in str(attrs(tool)[ga.TOOL_CALL_RESULT])


async def test_a_refused_tool_call_is_an_event_on_its_step_not_a_tool_span(
        tmp_path: Path, journal: Journal) -> None:
    _, spans = await traced_run(tmp_path, journal, roles__research__tools=["list_files"])
    [step] = named(spans, "invoke_agent research")
    tool_spans = [s for s in spans if s.name.startswith("execute_tool")]
    assert {attrs(s)[ga.WARDEN_STEP] for s in tool_spans} == {1, 2}  # not research's
    [refused] = events(step, ga.EVENT_POLICY_DECISION)
    assert refused == {ga.WARDEN_RULE: "gate", ga.WARDEN_DECISION: "deny",
                       ga.TOOL_NAME: "ledger_append",
                       ga.WARDEN_CALL_KEY: "r-1/e0/s0/a0/t0/c0"}  # no reason: no content


async def test_a_dry_runs_interceptions_are_events_and_its_simulations_are_spans(
        tmp_path: Path, journal: Journal) -> None:
    status, spans = await traced_run(tmp_path, journal, run_id="dry-r-1", dry_run=True)
    assert status == "succeeded"
    [root] = named(spans, "invoke_workflow warden")
    assert attrs(root)[ga.WARDEN_DRY_RUN] is True
    assert {s.context.trace_id for s in spans} == {trace_id_of("dry-r-1")}
    for role in ("research", "code", "review"):
        [step] = named(spans, f"invoke_agent {role}")
        assert [(e[ga.WARDEN_RULE], e[ga.WARDEN_DECISION], e[ga.TOOL_NAME])
                for e in events(step, ga.EVENT_POLICY_DECISION)] == [
            ("dry_run", "substitute", "ledger_append")]
    simulated = named(spans, "execute_tool ledger_append")
    assert {attrs(s)[ga.WARDEN_TOOL_MODE] for s in simulated} <= {"simulate"}


async def test_an_approval_wait_is_a_pair_of_events_on_the_step(
        tmp_path: Path, journal: Journal) -> None:
    status, spans = await traced_run(tmp_path, journal, extra=PauseEachTool)
    assert status == "succeeded"
    [step] = named(spans, "invoke_agent code")
    asked = events(step, ga.EVENT_APPROVAL_REQUESTED)
    decided = events(step, ga.EVENT_APPROVAL_DECIDED)
    assert asked == [{ga.WARDEN_RULE: "test.pause", ga.WARDEN_DECISION: "pause",
                      ga.TOOL_NAME: "ledger_append", ga.WARDEN_CALL_KEY: "r-1/e0/s1/a0/t0/c0"}]
    assert [e[ga.WARDEN_DECISION] for e in decided] == ["approved"]
    [root] = named(spans, "invoke_workflow warden")
    statuses = [e[ga.WARDEN_RUN_STATUS] for e in events(root, ga.EVENT_RUN_STATUS)]
    assert statuses.count("awaiting_approval") == 3  # the run's wait, once per tool call


async def test_a_failed_run_marks_its_root_span_failed_with_the_ending(
        tmp_path: Path, journal: Journal) -> None:
    # A cap of one step: the plan of three is refused twice, and the run fails.
    status, spans = await traced_run(tmp_path, journal, limits__max_steps_per_run=1)
    assert status == "failed"
    [root] = named(spans, "invoke_workflow warden")
    assert root.status.status_code == StatusCode.ERROR
    assert attrs(root)[ga.ERROR_TYPE] == "failed"
    assert attrs(root)[ga.WARDEN_RUN_STATUS] == "failed"
    [plan] = named(spans, "plan planner")
    assert plan.status.status_code == StatusCode.ERROR
    assert attrs(plan)[ga.ERROR_TYPE] == "PlanInvalidError"
    assert not plan.events  # the exception's message (which may quote content) is not kept
