"""The sandbox runs code with a scrubbed environment, hard limits and a group kill, in
every isolation this host offers (``isolation`` fixture, tests/actors/conftest.py)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from warden.actors.errors import SandboxError
from warden.actors.sandbox import run_sandboxed, sandbox_environment
from warden.config.settings import SandboxSettings


@pytest.fixture
def settings(isolation: str) -> SandboxSettings:
    return SandboxSettings(timeout_s=20.0, cpu_seconds=10, memory_mb=512,
                           isolation=isolation)  # type: ignore[arg-type]


async def python(
    code: str, cwd: Path, settings: SandboxSettings, stdin: bytes | None = None
) -> tuple[int, str, str]:
    result = await run_sandboxed(
        [sys.executable, "-c", code], cwd=cwd, settings=settings, stdin=stdin
    )
    return result.exit_code, result.stdout, result.stderr


def running(token: str) -> list[int]:
    """The live processes whose command line holds ``token``, seen from here (under
    bubblewrap the code's own pids are a namespace's, so they cannot be asked for)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if token.encode() not in cmdline.read():
                    continue
            with open(f"/proc/{entry}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue  # a zombie waiting for init to reap it counts as dead
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.append(int(entry))
    return found


async def eventually(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` with a deadline (for what no event can tell us, like an exit)."""
    with anyio.fail_after(10):
        while True:
            if predicate():
                return
            await anyio.sleep(0.01)


def spin_with_grandchild() -> tuple[list[str], str]:
    """A command that starts a grandchild, writes ``started``, then spins forever; and
    the token both carry in their command lines."""
    token = f"1000.{secrets.randbelow(10**9):09d}"
    code = (
        "import subprocess, sys\n"
        "subprocess.Popen(['sleep', sys.argv[1]])\n"
        "open('started', 'w').close()\n"
        "while True:\n"
        "    pass\n"
    )
    return [sys.executable, "-c", code, token], token


@pytest.mark.anyio
async def test_output_and_exit_code_are_returned(tmp_path: Path, settings: SandboxSettings) -> None:
    result = await run_sandboxed(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); exit(3)"],
        cwd=tmp_path,
        settings=settings,
    )
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.timed_out
    assert result.killed_by_signal is None
    assert result.duration_s > 0


@pytest.mark.anyio
async def test_the_child_runs_in_cwd_and_reads_stdin(
    tmp_path: Path, settings: SandboxSettings
) -> None:
    code = "import os, sys; print(os.getcwd()); print(sys.stdin.read().upper())"
    exit_code, stdout, _ = await python(code, tmp_path, settings, stdin=b"hello")
    assert exit_code == 0
    assert stdout.splitlines() == [str(tmp_path), "HELLO"]


@pytest.mark.anyio
async def test_child_cannot_see_secrets_from_our_environment(
    tmp_path: Path, settings: SandboxSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "ANTHROPIC_API_KEY": "secret-x",
        "WARDEN_FOO": "secret-w",
        "GITHUB_TOKEN": "secret-g",
        "AWS_SECRET_ACCESS_KEY": "secret-a",
        "OPENAI_API_KEY": "secret-o",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    exit_code, stdout, _ = await python(
        "import json, os; print(json.dumps(dict(os.environ)))", tmp_path, settings
    )
    assert exit_code == 0
    seen = json.loads(stdout)
    assert seen == sandbox_environment(tmp_path)
    assert seen["HOME"] == str(tmp_path)
    assert set(seen) == {
        "PATH", "HOME", "PWD", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE",
        "PYTHONUNBUFFERED",
    }  # fmt: skip
    for value in secrets.values():
        assert value not in stdout


@pytest.mark.anyio
async def test_infinite_loop_is_killed_at_the_timeout_with_its_whole_group(
    tmp_path: Path, isolation: str
) -> None:
    settings = SandboxSettings(timeout_s=1.0, isolation=isolation)  # type: ignore[arg-type]
    command, token = spin_with_grandchild()
    result = await run_sandboxed(command, cwd=tmp_path, settings=settings)
    assert result.timed_out
    assert result.killed_by_signal == signal.SIGKILL
    assert result.exit_code == -signal.SIGKILL
    assert result.duration_s >= 1.0
    assert (tmp_path / "started").exists()
    await eventually(lambda: not running(token))


@pytest.mark.anyio
async def test_a_cancelled_caller_leaves_no_process_behind(
    tmp_path: Path, settings: SandboxSettings
) -> None:
    command, token = spin_with_grandchild()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_sandboxed(command, cwd=tmp_path, settings=settings))
        await eventually(lambda: (tmp_path / "started").exists())
        await eventually(lambda: len(running(token)) >= 2)  # the code and its grandchild
        tg.cancel_scope.cancel()
    await eventually(lambda: not running(token))


@pytest.mark.anyio
async def test_a_background_grandchild_does_not_outlive_a_normal_exit(
    tmp_path: Path, settings: SandboxSettings
) -> None:
    token = f"1000.{secrets.randbelow(10**9):09d}"
    code = (
        "import subprocess, sys\n"
        f"subprocess.Popen(['sleep', '{token}'], stdout=subprocess.DEVNULL)\n"
        "print('started')\n"
    )
    exit_code, stdout, _ = await python(code, tmp_path, settings)
    assert (exit_code, stdout) == (0, "started\n")
    await eventually(lambda: not running(token))


@pytest.mark.anyio
async def test_cpu_limit_kills_a_busy_loop(tmp_path: Path, isolation: str) -> None:
    settings = SandboxSettings(timeout_s=30.0, cpu_seconds=1,
                               isolation=isolation)  # type: ignore[arg-type]
    result = await run_sandboxed(
        [sys.executable, "-c", "while True: pass"], cwd=tmp_path, settings=settings
    )
    assert not result.timed_out
    assert result.killed_by_signal in (signal.SIGXCPU, signal.SIGKILL)


@pytest.mark.anyio
async def test_allocating_beyond_memory_mb_fails(tmp_path: Path, isolation: str) -> None:
    settings = SandboxSettings(memory_mb=256, isolation=isolation)  # type: ignore[arg-type]
    exit_code, _, stderr = await python("b = bytearray(1024 * 1024 * 1024)", tmp_path, settings)
    assert exit_code != 0
    assert "MemoryError" in stderr


@pytest.mark.anyio
async def test_writing_beyond_file_size_mb_fails(tmp_path: Path, isolation: str) -> None:
    settings = SandboxSettings(file_size_mb=1, isolation=isolation)  # type: ignore[arg-type]
    code = "open('big.bin', 'wb').write(b'x' * (2 * 1024 * 1024))"
    exit_code, _, stderr = await python(code, tmp_path, settings)
    assert exit_code != 0
    assert "File too large" in stderr
    assert (tmp_path / "big.bin").stat().st_size <= 1024 * 1024


@pytest.mark.anyio
async def test_opening_beyond_open_files_fails(tmp_path: Path, isolation: str) -> None:
    settings = SandboxSettings(open_files=32, isolation=isolation)  # type: ignore[arg-type]
    code = "files = [open('f.txt', 'w') for _ in range(64)]"
    exit_code, _, stderr = await python(code, tmp_path, settings)
    assert exit_code != 0
    assert "Too many open files" in stderr


@pytest.mark.anyio
async def test_output_is_truncated_with_a_marker(tmp_path: Path, isolation: str) -> None:
    settings = SandboxSettings(max_output_bytes=100,
                               isolation=isolation)  # type: ignore[arg-type]
    code = "import sys; sys.stdout.write('a' * 10000); sys.stderr.write('b' * 150)"
    exit_code, stdout, stderr = await python(code, tmp_path, settings)
    assert exit_code == 0
    assert stdout == "a" * 100 + "\n[... 9900 more bytes truncated]"
    assert stderr == "b" * 100 + "\n[... 50 more bytes truncated]"


@pytest.mark.anyio
async def test_a_program_not_on_the_sandbox_path_is_a_sandbox_error(
    tmp_path: Path, settings: SandboxSettings
) -> None:
    with pytest.raises(SandboxError, match="'no-such-program' not found"):
        await run_sandboxed(["no-such-program"], cwd=tmp_path, settings=settings)


@pytest.mark.anyio
async def test_a_missing_cwd_is_a_sandbox_error(tmp_path: Path, settings: SandboxSettings) -> None:
    with pytest.raises(SandboxError, match="cannot start"):
        await run_sandboxed([sys.executable, "-c", ""], cwd=tmp_path / "nope", settings=settings)
