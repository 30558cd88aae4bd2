"""The metrics observer (supervisor/metrics.py) told events directly: what each event
counts, the policy rule a refusal is counted under, and labels that stay bounded."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from warden.bus.wire import Usage
from warden.supervisor.events import (
    ModelCallMade,
    RunCreated,
    StatusChanged,
    StepFinished,
    StepRetry,
    StepStarted,
    ToolCallMade,
)
from warden.supervisor.metrics import Metrics

pytestmark = pytest.mark.anyio


def tool(name: str, *, ok: bool = True, by: str | None = None, ms: float = 5.0,
         run: str = "r-1") -> ToolCallMade:
    return ToolCallMade(run_id=run, status="running", key="k", step=0, role="code", turn=0,
                        name=name, ok=ok, duration_ms=ms, decided_by=by)


async def test_a_run_counts_started_ended_and_its_duration_under_its_status() -> None:
    metrics = Metrics(roles=["code"])
    await metrics.observe(RunCreated(run_id="r-1", status="queued"))
    await metrics.observe(StatusChanged(run_id="r-1", status="running"))
    await metrics.observe(StatusChanged(run_id="r-1", status="awaiting_approval"))
    await metrics.observe(StatusChanged(run_id="r-1", status="awaiting_approval"))  # a replay
    await metrics.observe(StatusChanged(run_id="r-1", status="running"))
    await metrics.observe(StatusChanged(run_id="r-1", status="succeeded"))
    await metrics.observe(RunCreated(run_id="r-2", status="rejected", error="bad"))
    r = metrics.registry
    assert r.get_sample_value("warden_runs_started_total") == 1
    assert r.get_sample_value("warden_runs_ended_total", {"status": "succeeded"}) == 1
    assert r.get_sample_value("warden_runs_ended_total", {"status": "rejected"}) == 1
    assert r.get_sample_value("warden_runs_ended_total", {"status": "failed"}) == 0
    assert r.get_sample_value("warden_run_duration_seconds_count", {"status": "succeeded"}) == 1
    assert r.get_sample_value("warden_approval_waits_total") == 1
    assert r.get_sample_value("warden_policy_decisions_total",
                              {"rule": "approval", "decision": "pause"}) == 1


async def test_a_model_call_counts_its_duration_tokens_by_type_and_cost() -> None:
    metrics = Metrics()
    usage = Usage(input_tokens=100, output_tokens=20, cache_read_input_tokens=300,
                  cache_creation_input_tokens=40)
    for _ in range(2):
        await metrics.observe(ModelCallMade(
            run_id="r-1", status="running", key="k", purpose="step", model="m", usage=usage,
            call_cost_usd=0.5, latency_ms=1500.0))
    r = metrics.registry
    tokens = {t: r.get_sample_value("warden_model_tokens_total", {"model": "m", "type": t})
              for t in ("input", "output", "cache_read", "cache_write")}
    assert tokens == {"input": 200, "output": 40, "cache_read": 600, "cache_write": 80}
    assert r.get_sample_value("warden_model_cost_usd_total", {"model": "m"}) == 1.0
    labels = {"model": "m", "purpose": "step"}
    assert r.get_sample_value("warden_model_call_duration_seconds_sum", labels) == 3.0
    assert r.get_sample_value("warden_model_call_duration_seconds_bucket",
                              {**labels, "le": "1.0"}) == 0
    assert r.get_sample_value("warden_model_call_duration_seconds_bucket",
                              {**labels, "le": "2.0"}) == 2


async def test_a_call_served_down_its_chain_counts_as_a_fallback_by_model_and_reason(
) -> None:
    metrics = Metrics()
    for fallback in (None, "overloaded", "overloaded", "budget"):
        await metrics.observe(ModelCallMade(
            run_id="r-1", status="running", key="k", purpose="step", model="m",
            usage=Usage(), call_cost_usd=0.0, latency_ms=1.0, fallback=fallback))
    r = metrics.registry
    assert r.get_sample_value("warden_model_fallbacks_total",
                              {"model": "m", "reason": "overloaded"}) == 2
    assert r.get_sample_value("warden_model_fallbacks_total",
                              {"model": "m", "reason": "budget"}) == 1


@pytest.mark.parametrize(("event", "outcome", "rule", "decision"), [
    (tool("list_files"), "ok", None, None),
    (tool("list_files", ok=False), "error", None, None),
    (tool("list_files", ok=False, ms=0.0), "refused", "allowlist", "deny"),
    (tool("list_files", ok=False, ms=0.0, by="policy.blocked_patterns"), "denied",
     "blocked_pattern", "deny"),
    (tool("list_files", ok=False, ms=0.0, by="policy.magnitude"), "denied", "magnitude",
     "deny"),
    (tool("list_files", ok=False, ms=0.0, by="policy.loop"), "denied", "loop", "deny"),
    (tool("list_files", ok=False, ms=0.0, by="approval"), "denied", "approval", "deny"),
    (tool("list_files", ok=True, ms=0.0, by="dry_run"), "substituted", "dry_run",
     "substitute"),
])
async def test_a_tool_call_counts_its_outcome_and_the_rule_that_decided_it(
    event: ToolCallMade, outcome: str, rule: str | None, decision: str | None,
) -> None:
    metrics = Metrics(tools=["list_files"])
    await metrics.observe(event)
    r = metrics.registry
    assert r.get_sample_value("warden_tool_calls_total",
                              {"tool": "list_files", "outcome": outcome}) == 1
    text = generate_latest(metrics.registry).decode()
    decisions = [s for f in text_string_to_metric_families(text)
                 if f.name == "warden_policy_decisions" for s in f.samples]
    if rule is None:
        assert decisions == []
    else:
        assert [(s.labels, s.value) for s in decisions] == [
            ({"rule": rule, "decision": decision}, 1.0)]


async def test_a_tool_name_the_registry_does_not_hold_is_counted_as_other_and_not_kept(
) -> None:
    metrics = Metrics(tools=["list_files"])
    for i in range(50):
        await metrics.observe(tool(f"made_up_{i}", ok=False, ms=0.0))
    r = metrics.registry
    assert r.get_sample_value("warden_tool_calls_total",
                              {"tool": "other", "outcome": "refused"}) == 50
    assert len(metrics._tools) == 0


async def test_step_attempts_are_timed_by_role_and_outcome_and_retries_counted() -> None:
    metrics = Metrics(roles=["code"])
    base = {"run_id": "r-1", "status": "running", "step": 0, "role": "code"}
    await metrics.observe(StepStarted(**base, attempt=0, instruction="x"))  # type: ignore[arg-type]
    await metrics.observe(StepRetry(**base, attempt=0, reason="no"))  # type: ignore[arg-type]
    await metrics.observe(StepStarted(**base, attempt=1, instruction="x"))  # type: ignore[arg-type]
    await metrics.observe(StepFinished(**base, attempt=1, output="ok"))  # type: ignore[arg-type]
    r = metrics.registry
    assert r.get_sample_value("warden_step_retries_total", {"role": "code"}) == 1
    for outcome in ("retried", "finished"):
        assert r.get_sample_value("warden_step_duration_seconds_count",
                                  {"role": "code", "outcome": outcome}) == 1
