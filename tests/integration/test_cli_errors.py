"""Errors a user can act on (issue 9, point 7): the ``warden`` command as a real process.

Every mistake of the user's is one line on stderr naming what to fix, with the exit code
the README's CLI section gives (2 usage and config, 3 timed out), never a traceback.
Daemons are real ``warden up`` processes (real nats-server, real SQLite journal); the
journals read without a daemon are real SQLite files.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from warden.supervisor.journal import open_journal

from tests.integration.warden_process import WardenUp, child_env, warden_up
from warden import __version__

pytestmark = pytest.mark.integration

TOOLS = ["list_files", "read_file", "write_file", "run_python"]
SLEEPER_SCRIPT = '''
# One code step whose tool runs for a minute: a run that is mid-step until cancelled.
[scenario.sleeper]
match = "(?i)sleeper"
synthesis = "slept"
[[scenario.sleeper.plan]]
role = "code"
instruction = "Write sleep.py and run it."
[[scenario.sleeper.turns.code]]
tool = "write_file"
input = { path = "sleep.py", content = "import time\\ntime.sleep(60)\\n" }
[[scenario.sleeper.turns.code]]
tool = "run_python"
input = { path = "sleep.py" }
[[scenario.sleeper.turns.code]]
text = "Slept."
'''


def warden(*args: str, env: dict[str, str] | None = None, stdout: int | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m warden ARGS`` in a clean environment plus ``env``; never raises on
    a non-zero exit. ``stdout`` replaces the captured stdout (a file descriptor)."""
    return subprocess.run(
        [sys.executable, "-m", "warden", *args], text=True, timeout=timeout, check=False,
        env={**child_env(), **(env or {})}, stderr=subprocess.PIPE,
        stdout=subprocess.PIPE if stdout is None else stdout,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The command exited ``code`` with exactly one line on stderr holding ``words``."""
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warden: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _journal_steps(data_dir: Path, run_id: str) -> list[tuple[int, str]]:
    with closing(sqlite3.connect(f"file:{data_dir / 'journal.sqlite'}?mode=ro", uri=True,
                                 timeout=5)) as db:
        rows = db.execute("SELECT idx, status FROM steps WHERE run_id = ? ORDER BY idx",
                          (run_id,)).fetchall()
    return [(int(i), str(s)) for i, s in rows]


def _wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.05)


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[WardenUp]:
    """A daemon on the scripted model whose ``sleeper`` task stays mid-step a minute."""
    script = tmp_path / "sleeper.toml"
    script.write_text(SLEEPER_SCRIPT, encoding="utf-8")
    settings = {"models": {"provider": "scripted", "script_files": [str(script)]},
                "sandbox": {"timeout_s": 90.0}, "limits": {"step_retries": 0}}
    with warden_up(tmp_path, settings) as daemon:
        yield daemon


# -- config errors: one line, exit 2 ----------------------------------------------------


UNKNOWN_TOOL = ('[roles.code]\nmodel = "claude-sonnet-4-6"\nprompt = "p"\n'
                f'tools = {json.dumps([*TOOLS, "nuke_everything"])}\n')


@pytest.mark.parametrize("command", [["up"], ["demo"], ["worker", "--role", "code"]])
def test_an_unknown_tool_in_an_allowlist_is_one_line_naming_the_key_exit_2(
    tmp_path: Path, command: list[str]
) -> None:
    config = tmp_path / "w.toml"
    config.write_text(UNKNOWN_TOOL, encoding="utf-8")
    result = warden(*command, "--config", str(config), "--data-dir", str(tmp_path / "d"),
                    "--nats", f"nats://127.0.0.1:{_closed_port()}")
    assert_one_line(result, 2, "'roles.code.tools'", "'nuke_everything'", "unknown tool")


@pytest.mark.parametrize("command", [["up"], ["demo"], ["worker", "--role", "code"]])
def test_anthropic_without_a_key_is_one_line_naming_the_key_exit_2(
    tmp_path: Path, command: list[str]
) -> None:
    result = warden(*command, "--data-dir", str(tmp_path / "d"),
                    env={"WARDEN_MODELS__PROVIDER": "anthropic"})
    assert_one_line(result, 2, "'models.provider'", "'anthropic'", "ANTHROPIC_API_KEY")
    assert not (tmp_path / "d" / "nats-server.pid").exists()  # nothing was started


@pytest.mark.parametrize(
    ("env", "file", "words"),
    [
        ({"WARDEN_LIMITS__MAX_STEPS_PER_RUN": "0"}, "", ["'limits.max_steps_per_run'", "0"]),
        ({"WARDEN_LOCAL_WORKER": "false"}, "", ["WARDEN_LOCAL_WORKER", "not a setting"]),
        ({"WARDEN_LOCAL_WORKERS": "maybe"}, "", ["'local_workers'", "'maybe'"]),
        ({"WARDEN_LIMITS_RUN_BUDGET_USD": "nan"}, "", ["'limits.run_budget_usd'", "finite"]),
        ({"WARDEN_MODELS__SCRIPT_FILES": '["/nonexistent/s.toml"]'}, "",
         ["'models.script_files'", "/nonexistent/s.toml", "cannot be read"]),
        ({}, "[breaker]\nfailure_treshold = 3\n", ["'breaker.failure_treshold'", "unknown key"]),
        ({}, "[limits\n", ["not valid TOML"]),
        ({}, '[tools.refund]\nfunction = "no_such_shop.tools:refund"\n',
         ["'tools.refund.function'", "cannot import module 'no_such_shop.tools'"]),
        ({}, "[policy]\nblocked_patterns = ['rm (-rf']\n",
         ["'policy.blocked_patterns[0]'", "'rm (-rf'", "not a valid regular expression"]),
        ({}, "[policy.tools.nuke]\nmax = { amount = 1 }\n",
         ["'policy.tools.nuke'", "unknown tool"]),
        ({}, '[mcp.servers.tickets]\ncommand = ["/nonexistent/tickets-mcp"]\n',
         ["'mcp.servers.tickets'", "cannot start or list its tools", "FileNotFoundError"]),
        ({}, '[mcp.servers.tickets]\nurl = "ftp://tickets/mcp"\n',
         ["'mcp.servers.tickets.url'", "must be an http:// or https:// URL"]),
    ],
)
def test_bad_settings_are_each_one_line_naming_key_and_value_exit_2(
    tmp_path: Path, env: dict[str, str], file: str, words: list[str]
) -> None:
    args = ["up", "--data-dir", str(tmp_path / "d")]
    if file:
        (tmp_path / "w.toml").write_text(file, encoding="utf-8")
        args += ["--config", str(tmp_path / "w.toml")]
    assert_one_line(warden(*args, env=env), 2, *words)


def test_version_prints_the_installed_version() -> None:
    result = warden("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"warden {__version__}"


# -- the CLI against a daemon -----------------------------------------------------------


def test_submit_refuses_bad_text_and_budget_before_publishing(scripted: WardenUp) -> None:
    for args, words in [
        (["", "--budget", "0.1"], ["TEXT", "empty"]),
        (["   "], ["TEXT", "empty"]),
        (["x" * 70_000], ["TEXT", "limits.max_task_bytes"]),
        (["fine", "--budget", "0"], ["--budget", "greater than 0"]),
        (["fine", "--budget", "-1"], ["--budget", "greater than 0"]),
        (["fine", "--budget", "nan"], ["--budget", "finite"]),
        (["fine", "--budget", "inf"], ["--budget", "finite"]),
    ]:
        assert_one_line(scripted.cli("submit", *args), 2, *words)
    listed = scripted.cli("runs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []  # nothing was published


def test_cancel_mid_step_prints_the_status_and_ends_the_running_step(
    scripted: WardenUp,
) -> None:
    submitted = scripted.cli("submit", "sleeper", "--id", "r-sleeper")
    assert submitted.returncode == 0, submitted.stderr
    _wait_for(lambda: scripted.journal_status("r-sleeper") is not None
              and _journal_steps(scripted.data_dir, "r-sleeper") == [(0, "running")],
              30, "the sleeper's step running")
    cancelled = scripted.cli("cancel", "r-sleeper")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == "r-sleeper: cancelled"
    assert scripted.journal_status("r-sleeper") == "cancelled"
    assert _journal_steps(scripted.data_dir, "r-sleeper") == [(0, "cancelled")]
    again = scripted.cli("cancel", "r-sleeper")
    assert_one_line(again, 2, "'r-sleeper'", "already ended: cancelled")


def test_a_timeout_is_one_line_and_exit_3(tmp_path: Path) -> None:
    # No workers: the run cannot end, so the deadline is what ends the wait.
    with warden_up(tmp_path, {"models": {"provider": "scripted"},
                              "local_workers": False}) as daemon:
        result = daemon.cli("submit", "fizzbuzz", "--wait", "--timeout", "1",
                            "--id", "r-slow", "--json")
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("warden:")] == [
        "warden: run r-slow did not finish within 1s"]


def test_demo_timeout_is_one_line_and_exit_3(tmp_path: Path) -> None:
    result = warden("demo", "--timeout", "1", "--data-dir", str(tmp_path / "d"),
                    env={"WARDEN_LOCAL_WORKERS": "false", "WARDEN_MODELS__PROVIDER": "scripted"})
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "warden demo: runs did not finish within 1s" in result.stderr.splitlines()
    assert not (tmp_path / "d" / "daemon.json").exists()  # the demo's daemon stopped


# -- no daemon --------------------------------------------------------------------------


def _journal_with_runs(data_dir: Path, count: int) -> None:
    async def write() -> None:
        async with open_journal(data_dir / "journal.sqlite") as journal:
            for i in range(count):
                await journal.create_run(f"r-{i:03d}", text=f"task {i}", status="queued")
            await journal.transition("r-000", "running")
            await journal.record_step("r-000", 0, role="code", instruction="write",
                                      status="running")
            await journal.transition("r-000", "cancelled", error="cancelled by request")

    data_dir.mkdir(parents=True, exist_ok=True)
    anyio.run(write)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runs_and_show_read_the_journal_when_no_daemon_runs(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    _journal_with_runs(data_dir, 3)
    # Left by a killed daemon: its pid is gone.
    (data_dir / "daemon.json").write_text(json.dumps(
        {"pid": _dead_pid(), "url": f"nats://127.0.0.1:{_closed_port()}"}))
    before = (data_dir / "journal.sqlite").read_bytes()
    listed = warden("runs", "--json", "--data-dir", str(data_dir))
    assert_one_line(listed, 0, "no daemon is running", "journal")
    assert [(r["id"], r["status"]) for r in json.loads(listed.stdout)] == [
        ("r-000", "cancelled"), ("r-001", "queued"), ("r-002", "queued")]
    shown = warden("show", "r-000", "--json", "--data-dir", str(data_dir))
    assert_one_line(shown, 0, "no daemon is running")
    run = json.loads(shown.stdout)
    assert (run["status"], [s["status"] for s in run["steps"]]) == ("cancelled", ["cancelled"])
    missing = warden("show", "r-999", "--data-dir", str(data_dir))
    assert missing.returncode == 2 and "no run 'r-999'" in missing.stderr
    assert (data_dir / "journal.sqlite").read_bytes() == before  # read-only


def test_runs_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    _journal_with_runs(data_dir, 300)  # more than a pipe holds, as `| head -1` sees
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    try:
        result = warden("runs", "--data-dir", str(data_dir), stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Exception ignored" not in result.stderr
    assert "BrokenPipe" not in result.stderr


@pytest.mark.parametrize("command", [["runs"], ["up"]])
def test_a_refused_connection_is_one_line(tmp_path: Path, command: list[str]) -> None:
    # `up` logs at info: a connection that never was is still one line.
    result = warden(*command, "--nats", f"nats://127.0.0.1:{_closed_port()}",
                    "--data-dir", str(tmp_path / "d"),
                    env={"WARDEN_MODELS__PROVIDER": "scripted"})
    assert_one_line(result, 2, "Connection refused")


def test_no_daemon_and_no_journal_says_how_to_start_one(tmp_path: Path) -> None:
    result = warden("show", "r-1", "--data-dir", str(tmp_path / "nothing"))
    assert_one_line(result, 2, "no daemon is running", "warden up")
