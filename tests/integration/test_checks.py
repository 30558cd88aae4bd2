"""Verification checks, end to end: a review that calls ``run_tests`` is judged by what the
check said, not by what the reviewer answered afterwards.

The scripted model plays a code step that writes a module's tests and a review step that
runs them with ``run_tests`` and then answers "PASS" whatever happened. What "done" means
(issue 8): a check that timed out or failed keeps the run from ending ``succeeded``, also
for ``warden submit --wait`` (exit code 1); a check that passed lets it succeed.

Timing: pytest alone takes about 2 s to start on a busy test machine, so a check that is
to pass or fail on its merits gets the sandbox's usual 30 s; a check that is to time out
gets 2 s (its test sleeps a minute). Steps are not retried (``step_retries = 0``): the
scripted reviewer would answer the same on every retry.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from warden.config import Settings
from warden.supervisor.daemon import Daemon

from tests.integration.harness import make_settings, run_task, running_daemon
from tests.integration.warden_process import warden_up

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SHORT_SANDBOX_TIMEOUT_S = 2.0
"""The sandbox's timeout where the check is to time out."""
SANDBOX_TIMEOUT_S = 30.0
"""The sandbox's timeout where the check is to pass or fail on its merits."""

CHECK_SCRIPT = '''
# A code step writes a test file; the review runs it and answers PASS, whatever it said.

[scenario.check_times_out]
[[scenario.check_times_out.plan]]
role = "code"
instruction = "Write test_slow.py."
[[scenario.check_times_out.plan]]
role = "review"
instruction = "Run the workspace's tests and report PASS or FAIL."
[[scenario.check_times_out.turns.code]]
tool = "write_file"
input = { path = "test_slow.py", content = """
import time


def test_takes_a_minute():
    time.sleep(60)
""" }
[[scenario.check_times_out.turns.code]]
text = "Wrote test_slow.py."
[[scenario.check_times_out.turns.review]]
tool = "run_tests"
input = { path = "." }
[[scenario.check_times_out.turns.review]]
text = "PASS: the tests look fine."

[scenario.check_fails]
[[scenario.check_fails.plan]]
role = "code"
instruction = "Write test_sums.py."
[[scenario.check_fails.plan]]
role = "review"
instruction = "Run the workspace's tests and report PASS or FAIL."
[[scenario.check_fails.turns.code]]
tool = "write_file"
input = { path = "test_sums.py", content = """
def test_one_and_one():
    assert 1 + 1 == 3
""" }
[[scenario.check_fails.turns.code]]
text = "Wrote test_sums.py."
[[scenario.check_fails.turns.review]]
tool = "run_tests"
input = { path = "." }
[[scenario.check_fails.turns.review]]
text = "PASS: the tests look fine."

[scenario.check_passes]
[[scenario.check_passes.plan]]
role = "code"
instruction = "Write test_sums.py."
[[scenario.check_passes.plan]]
role = "review"
instruction = "Run the workspace's tests and report PASS or FAIL."
[[scenario.check_passes.turns.code]]
tool = "write_file"
input = { path = "test_sums.py", content = """
def test_one_and_one():
    assert 1 + 1 == 2
""" }
[[scenario.check_passes.turns.code]]
text = "Wrote test_sums.py."
[[scenario.check_passes.turns.review]]
tool = "run_tests"
input = { path = "." }
[[scenario.check_passes.turns.review]]
text = "PASS: the tests look fine."
'''

LIMITS = {"step_retries": 0, "retry_base_s": 0.01, "retry_max_s": 0.1}


def script_file(tmp_path: Path) -> str:
    path = tmp_path / "check_scripts.toml"
    path.write_text(CHECK_SCRIPT, encoding="utf-8")
    return str(path)


def check_settings(tmp_path: Path, *, sandbox_timeout_s: float = SANDBOX_TIMEOUT_S) -> Settings:
    return make_settings(
        tmp_path, models__script_files=[script_file(tmp_path)],
        sandbox__timeout_s=sandbox_timeout_s,
        **{f"limits__{key}": value for key, value in LIMITS.items()},
    )


async def run_tests_outputs(daemon: Daemon, run_id: str) -> list[str]:
    """What each ``run_tests`` call of the run answered (its recorded outcome)."""
    effects = await daemon.journal.effects(run_id)
    return [e.record.output for e in effects.values()
            if e.tool == "run_tests" and e.record is not None]


async def test_review_answering_pass_after_run_tests_timed_out_does_not_succeed(
    tmp_path: Path,
) -> None:
    settings = check_settings(tmp_path, sandbox_timeout_s=SHORT_SANDBOX_TIMEOUT_S)
    async with running_daemon(settings) as (daemon, client):
        run = await run_task(client, "Write a slow test", scenario="check_times_out")
        outputs = await run_tests_outputs(daemon, run.id)

    assert outputs and all("timed out" in output for output in outputs), outputs
    assert run.status != "succeeded", run


async def test_review_answering_pass_after_run_tests_failed_does_not_succeed(
    tmp_path: Path,
) -> None:
    async with running_daemon(check_settings(tmp_path)) as (daemon, client):
        run = await run_task(client, "Write a wrong test", scenario="check_fails")
        outputs = await run_tests_outputs(daemon, run.id)

    assert outputs and all("FAIL" in output.splitlines()[0] for output in outputs), outputs
    assert run.status != "succeeded", run


async def test_review_answering_pass_after_run_tests_passed_succeeds(tmp_path: Path) -> None:
    async with running_daemon(check_settings(tmp_path)) as (daemon, client):
        run = await run_task(client, "Write a right test", scenario="check_passes")
        outputs = await run_tests_outputs(daemon, run.id)

    assert [output.splitlines()[0] for output in outputs] == ["PASS"]
    assert run.status == "succeeded", run.error


@pytest.mark.timeout(90)
def test_submit_wait_exits_1_when_the_check_timed_out(tmp_path: Path) -> None:
    settings = {
        "models": {"provider": "scripted", "script_files": [script_file(tmp_path)]},
        "sandbox": {"timeout_s": SHORT_SANDBOX_TIMEOUT_S},
        "limits": LIMITS,
    }
    with warden_up(tmp_path, settings) as daemon:
        submitted = daemon.submit_wait("Write a slow test", "--scenario", "check_times_out",
                                       timeout=60)

    assert submitted.returncode == 1, submitted
    assert json.loads(submitted.stdout)["status"] != "succeeded"
