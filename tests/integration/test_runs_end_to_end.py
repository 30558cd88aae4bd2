"""A whole daemon on a real nats-server and a real SQLite file, driven over NATS."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import make_settings, run_task, running_daemon

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_submitted_task_runs_to_success_through_workers_over_nats(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running_daemon(settings) as (daemon, client):
        run = await run_task(client, "Write fizzbuzz(n) in Python, with pytest tests.")
        calls = await daemon.journal.count_model_calls(run.id)
        tools = await daemon.journal.tool_call_names(run.id)
    assert run.status == "succeeded", run.error
    assert [s.role for s in run.steps] == ["research", "code", "review"]
    assert all(s.status == "succeeded" for s in run.steps)
    # plan + research (2 turns) + code (3 turns) + review (2 turns) + synthesis
    assert calls == 1 + 2 + 3 + 2 + 1
    assert tools == ["list_files", "write_file", "write_file", "run_python", "run_tests"]
    workspace = Path(settings.data_dir) / "workspaces" / run.id
    assert (workspace / "fizzbuzz.py").is_file()
    assert (workspace / "test_fizzbuzz.py").is_file()
    # The reviewer's answer comes from the real pytest run in the sandbox.
    assert run.steps[2].output.startswith("PASS")
    assert run.tokens > 0 and run.cost_usd > 0
    assert run.result and "fizzbuzz" in run.result


async def test_concurrent_runs_all_finish_with_their_own_workspaces(tmp_path: Path) -> None:
    import anyio

    settings = make_settings(tmp_path)
    results = []
    async with running_daemon(settings) as (_daemon, client):

        async def one(text: str) -> None:
            results.append(await run_task(client, text))

        async with anyio.create_task_group() as tg:
            for text in ("fizzbuzz please", "slugify titles", "word frequency counter"):
                tg.start_soon(one, text)
    assert sorted(r.status for r in results) == ["succeeded"] * 3
    assert len({r.id for r in results}) == 3


async def test_invalid_plan_is_retried_with_the_error_then_fails_clearly(tmp_path: Path) -> None:
    async with running_daemon(make_settings(tmp_path)) as (daemon, client):
        bad = await run_task(client, "anything", scenario="bad_plan")
        fixed = await run_task(client, "anything", scenario="fixed_plan")
        bad_calls = await daemon.journal.count_model_calls(bad.id)
    assert bad.status == "failed"
    assert "invalid after 2 attempts" in (bad.error or "")
    assert "'janitor' is not one of" in (bad.error or "")
    assert bad_calls == 2
    assert fixed.status == "succeeded", fixed.error


@pytest.mark.parametrize("retries", [0, 1, 3])
async def test_step_that_keeps_failing_is_retried_with_feedback_then_fails(
    tmp_path: Path, retries: int
) -> None:
    settings = make_settings(tmp_path, limits__step_retries=retries, limits__retry_base_s=0.01)
    async with running_daemon(settings) as (daemon, client):
        run = await run_task(client, "judge it", scenario="failing_review")
        calls = await daemon.journal.count_model_calls(run.id)
    assert run.status == "failed"
    assert f"failed {1 + retries} times" in (run.error or "")
    assert calls == 1 + 1 + retries  # the plan, the step and its retries: no synthesis
