"""``run_python`` and ``run_tests`` run model-written code in the sandbox: ``python.py``."""

from __future__ import annotations

import pytest
from warden.actors.workspace import Workspace

from tests.actors.tools.support import call


@pytest.mark.anyio
async def test_run_python_runs_a_file_with_arguments(ws: Workspace) -> None:
    (ws.root / "hello.py").write_text("import sys\nprint('hello', *sys.argv[1:])\n")
    record = await call(ws, "run_python", {"path": "hello.py", "args": ["a", "b"]})
    assert (record.ok, record.output) == (True, "exit code: 0\n--- stdout ---\nhello a b")


@pytest.mark.anyio
async def test_run_python_runs_code_and_reports_a_failure(ws: Workspace) -> None:
    record = await call(ws, "run_python", {"code": "print('before')\nraise SystemExit(2)"})
    assert (record.ok, record.output) == (True, "exit code: 2\n--- stdout ---\nbefore")
    crash = await call(ws, "run_python", {"code": "1/0"})
    assert crash.output.startswith("exit code: 1\n--- stderr ---\nTraceback")
    assert "ZeroDivisionError" in crash.output


@pytest.mark.parametrize("arguments", [{}, {"path": "a.py", "code": "pass"}])
@pytest.mark.anyio
async def test_run_python_needs_exactly_one_of_path_and_code(
    ws: Workspace, arguments: dict[str, object]
) -> None:
    record = await call(ws, "run_python", arguments)
    assert not record.ok
    assert (
        record.output == "tool 'run_python': bad arguments: give exactly one of `path` and `code`"
    )


@pytest.mark.anyio
async def test_run_python_past_the_sandbox_timeout_is_not_ok_and_timed_out(ws: Workspace) -> None:
    record = await call(ws, "run_python", {"code": "while True: pass"}, timeout_s=1.0)
    assert (record.ok, record.timed_out) == (False, True)
    assert record.output.startswith("tool 'run_python': timed out after 1.")
    assert "exit code: -9" in record.output


@pytest.mark.anyio
async def test_run_tests_reports_pass_for_passing_tests(ws: Workspace) -> None:
    (ws.root / "test_ok.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    record = await call(ws, "run_tests", {})
    assert record.ok
    first, second, *_ = record.output.splitlines()
    assert (first, second) == ("PASS", "exit code: 0")
    assert "1 passed" in record.output


@pytest.mark.anyio
async def test_run_tests_reports_fail_for_failing_tests(ws: Workspace) -> None:
    (ws.root / "tests").mkdir()
    (ws.root / "tests" / "test_bad.py").write_text("def test_bad():\n    assert 1 + 1 == 3\n")
    record = await call(ws, "run_tests", {"path": "tests"})
    assert not record.ok  # a check's failing verdict
    first, second, *_ = record.output.splitlines()
    assert (first, second) == ("tool 'run_tests': FAIL", "exit code: 1")
    assert "1 failed" in record.output


@pytest.mark.anyio
async def test_run_tests_past_the_sandbox_timeout_is_not_ok_and_timed_out(ws: Workspace) -> None:
    (ws.root / "test_hangs.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(60)\n")
    record = await call(ws, "run_tests", {}, timeout_s=0.5)
    assert (record.ok, record.timed_out) == (False, True)
    assert record.output.startswith("tool 'run_tests': FAIL: timed out after 0.")
    assert "exit code: -9" in record.output


@pytest.mark.anyio
async def test_a_test_run_that_finishes_is_not_timed_out_even_when_it_fails(ws: Workspace) -> None:
    (ws.root / "test_bad.py").write_text("def test_bad():\n    assert False\n")
    record = await call(ws, "run_tests", {})
    assert (record.ok, record.timed_out) == (False, False)
    assert record.output.startswith("tool 'run_tests': FAIL\n")

