"""The sandbox runs code with a scrubbed environment, hard limits and a group kill."""

from __future__ import annotations

import json
import os
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
def settings() -> SandboxSettings:
    return SandboxSettings(timeout_s=20.0, cpu_seconds=10, memory_mb=512)


async def python(
    code: str, cwd: Path, settings: SandboxSettings, stdin: bytes | None = None
) -> tuple[int, str, str]:
    result = await run_sandboxed(
        [sys.executable, "-c", code], cwd=cwd, settings=settings, stdin=stdin
    )
    return result.exit_code, result.stdout, result.stderr


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie waiting for init to reap it counts as dead."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def eventually(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` with a deadline (for what no event can tell us, like an exit)."""
    with anyio.fail_after(10):
        while True:
            if predicate():
                return
            await anyio.sleep(0.01)


def pids_written(path: Path) -> bool:
    return path.exists() and path.read_text().endswith("\n")


# A script that starts a grandchild, says both pids, then spins forever.
SPIN_WITH_GRANDCHILD = """\
import os, subprocess
child = subprocess.Popen(["sleep", "1000"])
with open("pids.txt", "w") as f:
    f.write(f"{os.getpid()} {child.pid}\\n")
while True:
    pass
"""


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
        "PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE", "PYTHONUNBUFFERED"
    }  # fmt: skip
    for value in secrets.values():
        assert value not in stdout


@pytest.mark.anyio
async def test_infinite_loop_is_killed_at_the_timeout_with_its_whole_group(
    tmp_path: Path,
) -> None:
    settings = SandboxSettings(timeout_s=1.0)
    result = await run_sandboxed(
        [sys.executable, "-c", SPIN_WITH_GRANDCHILD], cwd=tmp_path, settings=settings
    )
    assert result.timed_out
    assert result.killed_by_signal == signal.SIGKILL
    assert result.exit_code == -signal.SIGKILL
    assert result.duration_s >= 1.0
    child, grandchild = (int(pid) for pid in (tmp_path / "pids.txt").read_text().split())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # reaped, not a zombie
    await eventually(lambda: not alive(grandchild))


@pytest.mark.anyio
async def test_a_cancelled_caller_leaves_no_process_behind(
    tmp_path: Path, settings: SandboxSettings
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: run_sandboxed(
                [sys.executable, "-c", SPIN_WITH_GRANDCHILD], cwd=tmp_path, settings=settings
            )
        )
        await eventually(lambda: pids_written(tmp_path / "pids.txt"))
        tg.cancel_scope.cancel()
    child, grandchild = (int(pid) for pid in (tmp_path / "pids.txt").read_text().split())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    await eventually(lambda: not alive(grandchild))


@pytest.mark.anyio
async def test_a_background_grandchild_does_not_outlive_a_normal_exit(
    tmp_path: Path, settings: SandboxSettings
) -> None:
    code = (
        "import subprocess, sys\n"
        "child = subprocess.Popen(['sleep', '1000'], stdout=subprocess.DEVNULL)\n"
        "print(child.pid)\n"
    )
    exit_code, stdout, _ = await python(code, tmp_path, settings)
    assert exit_code == 0
    await eventually(lambda: not alive(int(stdout)))


@pytest.mark.anyio
async def test_cpu_limit_kills_a_busy_loop(tmp_path: Path) -> None:
    settings = SandboxSettings(timeout_s=30.0, cpu_seconds=1)
    result = await run_sandboxed(
        [sys.executable, "-c", "while True: pass"], cwd=tmp_path, settings=settings
    )
    assert not result.timed_out
    assert result.killed_by_signal in (signal.SIGXCPU, signal.SIGKILL)


@pytest.mark.anyio
async def test_allocating_beyond_memory_mb_fails(tmp_path: Path) -> None:
    settings = SandboxSettings(memory_mb=256)
    exit_code, _, stderr = await python("b = bytearray(1024 * 1024 * 1024)", tmp_path, settings)
    assert exit_code != 0
    assert "MemoryError" in stderr


@pytest.mark.anyio
async def test_writing_beyond_file_size_mb_fails(tmp_path: Path) -> None:
    settings = SandboxSettings(file_size_mb=1)
    code = "open('big.bin', 'wb').write(b'x' * (2 * 1024 * 1024))"
    exit_code, _, stderr = await python(code, tmp_path, settings)
    assert exit_code != 0
    assert "File too large" in stderr
    assert (tmp_path / "big.bin").stat().st_size <= 1024 * 1024


@pytest.mark.anyio
async def test_opening_beyond_open_files_fails(tmp_path: Path) -> None:
    settings = SandboxSettings(open_files=32)
    code = "files = [open('f.txt', 'w') for _ in range(64)]"
    exit_code, _, stderr = await python(code, tmp_path, settings)
    assert exit_code != 0
    assert "Too many open files" in stderr


@pytest.mark.anyio
async def test_output_is_truncated_with_a_marker(tmp_path: Path) -> None:
    settings = SandboxSettings(max_output_bytes=100)
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
