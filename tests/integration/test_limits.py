"""Limits the parent enforces: step caps, budgets, circuit breakers (real NATS, real SQLite)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from warden.actors.tools import default_registry
from warden.actors.worker import Worker
from warden.supervisor.supervision import ChildSpec

from tests.integration.harness import make_settings, run_task, running_daemon, show

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.mark.parametrize("cap", [1, 3, 5])
async def test_looping_worker_is_stopped_at_exactly_the_turn_cap(tmp_path: Path, cap: int) -> None:
    settings = make_settings(tmp_path, limits__max_turns_per_step=cap)
    async with running_daemon(settings) as (daemon, client):
        run = await run_task(client, "look around", scenario="loop")
        calls = await daemon.journal.count_model_calls(run.id)
        tools = await daemon.journal.tool_call_names(run.id)
    assert run.status == "degraded"
    assert f"turns per step cap {cap} reached" in (run.error or "")
    assert run.steps[0].status == "capped" and run.steps[0].turns == cap
    assert calls == 1 + cap  # the plan, then exactly `cap` turns of the looping step
    assert tools == ["list_files"] * cap


async def test_plan_longer_than_the_run_cap_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits__max_steps_per_run=2)
    async with running_daemon(settings) as (_daemon, client):
        run = await run_task(client, "fizzbuzz")  # plans 3 steps
    assert run.status == "failed"
    assert "more than the cap of 2" in (run.error or "")


async def test_retries_count_against_the_steps_per_run_cap(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits__max_steps_per_run=1)
    async with running_daemon(settings) as (daemon, client):
        run = await run_task(client, "judge it", scenario="failing_review")
        calls = await daemon.journal.count_model_calls(run.id)
    assert run.status == "degraded"
    assert "steps per run cap 1 reached" in (run.error or "")
    assert calls == 1 + 1  # the plan and the one step the cap allowed


async def test_steps_per_worker_cap_stops_the_run_at_that_worker(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits__max_steps_per_worker=1)
    async with running_daemon(settings) as (_daemon, client):
        run = await run_task(client, "judge it", scenario="failing_review")
    # The first review step fails; its retry would be the review worker's second step.
    assert run.status == "degraded"
    assert "steps per worker cap 1 reached" in (run.error or "")
    assert "'review'" in (run.error or "")


async def test_budget_exhausted_stops_before_the_call_with_partial_results(
    tmp_path: Path,
) -> None:
    # Small max_tokens keep each call's worst case small next to a whole run's cost.
    settings = make_settings(tmp_path, models__max_tokens=64)
    async with running_daemon(settings) as (daemon, client):
        full = await run_task(client, "fizzbuzz")
        # Enough for the plan and some steps, not for the whole run.
        budget = full.cost_usd * 0.8
        run = await run_task(client, "fizzbuzz", budget_usd=budget)
        calls = await daemon.journal.count_model_calls(run.id)
    assert full.status == "succeeded"
    assert run.status == "budget_exhausted"
    assert "would be exceeded" in (run.error or "")
    assert run.cost_usd <= budget
    assert 0 < calls < 9
    assert run.result, "partial results of the steps that did run"
    assert any(s.status == "succeeded" for s in run.steps)


async def test_breaker_opens_fails_fast_and_recovers_through_half_open(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, breaker__failure_threshold=2, breaker__cooldown_s=2.0,
        limits__transport_patience_s=0.5, limits__step_retries=1, limits__retry_base_s=0.01,
    )
    async with running_daemon(settings) as (daemon, client):
        breaker = daemon.breakers["review"]
        await daemon.root.terminate_child("worker.review")
        # No review worker: the step and its retry fail (no responders) -> breaker opens.
        first = await run_task(client, "fizzbuzz")
        assert first.status == "failed"
        assert breaker.state == "open"
        # While open, the next run's review step fails fast, naming the open breaker.
        second = await run_task(client, "fizzbuzz")
        assert second.status == "failed"
        assert "circuit breaker 'worker.review' is open" in (second.error or "")
        # Bring the worker back; after the cooldown a probe goes through and closes it.
        worker = Worker(client, "review", settings.roles["review"], daemon.model,
                        default_registry(), settings.sandbox, data_dir=daemon.data_dir,
                        models=settings.models)
        await daemon.root.start_child(ChildSpec(name="worker.review", start=worker.run))
        with anyio.fail_after(10):
            while breaker.state == "open":  # noqa: ASYNC110 - the breaker has no event
                await anyio.sleep(0.05)
        assert breaker.state == "half_open"
        third = await run_task(client, "fizzbuzz")
        assert third.status == "succeeded", third.error
        assert breaker.state == "closed"
        assert (await show(client, third.id)).steps[2].status == "succeeded"
