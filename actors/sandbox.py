"""Running untrusted code: a subprocess with a scrubbed environment and hard limits.

``run_sandboxed`` is the one way warden runs code a model wrote. What it guarantees:

- **environment**: built from nothing, never copied from ours: ``PATH`` (the venv's
  ``bin`` first, then the system's), ``HOME`` and ``PWD`` (the working directory), ``LANG``, and
  ``PYTHON*`` switches. No API key, token, secret, ``ANTHROPIC_*`` or ``WARDEN_*``
  variable can reach the child, because none is ever added
  (``test_child_cannot_see_secrets_from_our_environment``);
- **resource limits** (``SandboxSettings``): ``RLIMIT_CPU`` (``cpu_seconds``; SIGXCPU,
  then SIGKILL a second later), ``RLIMIT_AS`` (``memory_mb``), ``RLIMIT_NOFILE``
  (``open_files``) and ``RLIMIT_FSIZE`` (``file_size_mb``). anyio's ``open_process`` has
  no ``preexec_fn`` (which is unsafe with threads anyway), so a tiny launcher,
  ``python -I -S -c _LAUNCHER``, sets them in the child and then ``execv``\\ s the command:
  the limits apply from its first instruction;
- **wall clock**: the child leads its own session (so its own process group); at
  ``timeout_s`` the whole group gets SIGKILL and the result says ``timed_out``. The group
  is killed when the child exits too, so a background grandchild does not outlive it;
- **reaping**: the child is always waited for, in a shielded scope, also when the caller
  is cancelled; no zombie, no orphan in our group (``test_timeout_kills_the_whole_group``);
- **bounded output**: stdout and stderr are each kept up to ``max_output_bytes`` and the
  rest counted and dropped (still read, so the child never blocks on a full pipe).

- **isolation** (``isolation.py``): under bubblewrap, new PID, user, IPC, UTS and
  network namespaces, only the interpreter, the system's libraries and the workspace
  visible; else, as root, an unprivileged user; else nothing more, with a warning. The
  daemon's ``/proc/<pid>/environ``, its data directory and ``$HOME`` are out of reach in
  the first two (``tests/actors/test_sandbox_isolation.py``).

Without bubblewrap a grandchild that starts its own session escapes the group kill
(``RLIMIT_CPU`` still bounds it); under bubblewrap it dies with the namespace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.abc
import msgspec
from warden.actors.errors import SandboxError
from warden.actors.isolation import bubblewrap_argv, hand_over, isolation_in_use
from warden.config.settings import SandboxSettings

_MIB = 1024 * 1024

_LAUNCHER = """\
import os, resource, signal, sys
limits = zip(
    (resource.RLIMIT_CPU, resource.RLIMIT_AS, resource.RLIMIT_NOFILE, resource.RLIMIT_FSIZE),
    (int(value) for value in sys.argv[1:5]),
)
for kind, value in limits:
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value + 1 if kind == resource.RLIMIT_CPU else value))
for name in ("SIGPIPE", "SIGXFSZ"):
    signal.signal(getattr(signal, name), signal.SIG_DFL)
uid, gid = int(sys.argv[5]), int(sys.argv[6])
if uid >= 0:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
os.execv(sys.argv[7], sys.argv[7:])
"""
"""Runs as ``python -I -S -c _LAUNCHER cpu as nofile fsize uid gid executable args...``.

Python ignores SIGPIPE and SIGXFSZ and an ignored signal survives ``exec``; the launcher
restores both, as ``subprocess``'s ``restore_signals`` would. The CPU hard limit is one
second above the soft one, so SIGXCPU comes first and SIGKILL if it is ignored. A ``uid``
of -1 keeps ours; another is taken (group first, no supplementary groups) after the
limits, so the code can raise none of them back.
"""

_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxResult(msgspec.Struct, frozen=True, kw_only=True):
    """How a sandboxed process ended.

    ``exit_code`` is the return code as ``subprocess`` reports it: negative (``-N``) if
    signal ``N`` killed the process, which ``killed_by_signal`` then names (``N``).
    """

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    killed_by_signal: int | None = None

    @property
    def signal_name(self) -> str | None:
        """``"SIGKILL"`` and the like, or ``None`` if no signal ended the process."""
        if self.killed_by_signal is None:
            return None
        try:
            return signal.Signals(self.killed_by_signal).name
        except ValueError:
            return f"signal {self.killed_by_signal}"

    @property
    def ending(self) -> str:
        """How the process ended, in words: a timeout, a signal, or its exit code with
        the end of its stderr."""
        if self.timed_out:
            return f"timed out after {self.duration_s:.1f} s and was killed"
        if self.killed_by_signal is not None:
            return f"killed by {self.signal_name} (a resource limit, or a crash)"
        return f"exited with code {self.exit_code}: {self.stderr.strip()[-500:]}"

    @property
    def report(self) -> str:
        """The exit code, then stdout and stderr under headings when not empty: what a
        tool shows the model of a run."""
        parts = [f"exit code: {self.exit_code}"]
        if self.stdout:
            parts.append(f"--- stdout ---\n{self.stdout.rstrip()}")
        if self.stderr:
            parts.append(f"--- stderr ---\n{self.stderr.rstrip()}")
        return "\n".join(parts)


def sandbox_environment(cwd: Path) -> dict[str, str]:
    """The child's whole environment; nothing of ours is copied into it."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": f"{venv_bin}:{_SYSTEM_PATH}",
        "HOME": str(cwd),
        "PWD": str(cwd),  # what bubblewrap's --chdir sets: the same in every isolation
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",  # what was printed before a kill is still captured
    }


async def run_sandboxed(
    argv: list[str],
    *,
    cwd: Path,
    settings: SandboxSettings,
    stdin: bytes | None = None,
    network: bool = False,
) -> SandboxResult:
    """Run ``argv`` in ``cwd`` under the limits of ``settings``, isolated as this process
    can (``isolation_in_use``; ``network``: whether it may use the network, which only
    bubblewrap can refuse), and return how it ended.

    Blocks until the process exits or ``settings.timeout_s`` passes; a cancellation
    point. A non-zero exit, a signal or a timeout is a result, not an error. Raises
    ``SandboxError`` only if the process cannot be started (no such program, no such
    ``cwd``), and ``SandboxUnavailableError`` when the configured isolation is not
    possible. On cancellation the process group is killed and reaped before the
    cancellation propagates.
    """
    if not argv:
        raise SandboxError("sandbox", "no command to run")
    env = sandbox_environment(cwd)
    executable = shutil.which(argv[0], path=env["PATH"])
    if executable is None:
        raise SandboxError("sandbox", f"program {argv[0]!r} not found on the sandbox PATH")
    isolation = await isolation_in_use(settings)
    command = [
        sys.executable, "-I", "-S", "-c", _LAUNCHER,
        str(settings.cpu_seconds),
        str(settings.memory_mb * _MIB),
        str(settings.open_files),
        str(settings.file_size_mb * _MIB),
        str(isolation.uid if isolation.uid is not None else -1),
        str(isolation.gid if isolation.gid is not None else -1),
        executable,
        *argv[1:],
    ]  # fmt: skip
    if isolation.bwrap is not None:
        if not await anyio.Path(cwd).is_dir():
            raise SandboxError("sandbox", f"cannot start {argv[0]!r} in {str(cwd)!r}: "
                                          "no such directory")
        command = [*bubblewrap_argv(isolation, cwd=cwd, env=env, network=network), *command]
    elif isolation.uid is not None:
        try:
            await anyio.to_thread.run_sync(hand_over, cwd, isolation)
        except OSError as exc:
            raise SandboxError("sandbox", f"cannot start {argv[0]!r} in {str(cwd)!r}: {exc}"
                               ) from None
    started = anyio.current_time()
    try:
        process = await anyio.open_process(
            command,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise SandboxError("sandbox", f"cannot start {argv[0]!r} in {str(cwd)!r}: {exc}") from None
    out = _Capture(settings.max_output_bytes)
    err = _Capture(settings.max_output_bytes)
    try:
        with anyio.move_on_after(settings.timeout_s) as deadline:
            async with anyio.create_task_group() as tg:
                if process.stdout is not None:
                    tg.start_soon(out.drain, process.stdout)
                if process.stderr is not None:
                    tg.start_soon(err.drain, process.stderr)
                if stdin is not None and process.stdin is not None:
                    tg.start_soon(_feed, process.stdin, stdin)
                await process.wait()
                # Grandchildren may hold the pipes open; the drains end when they die.
                _kill_group(process.pid)
    finally:
        _kill_group(process.pid)
        with anyio.CancelScope(shield=True):
            await process.wait()
            await process.aclose()
    code = process.returncode if process.returncode is not None else -signal.SIGKILL
    if isolation.bwrap is not None and 128 < code < 128 + signal.NSIG:
        # bwrap's PID 1 exits 128 + N when signal N killed the code, as a shell does.
        code = 128 - code
    return SandboxResult(
        exit_code=code,
        stdout=out.text(),
        stderr=err.text(),
        timed_out=deadline.cancelled_caught,
        duration_s=anyio.current_time() - started,
        killed_by_signal=-code if code < 0 else None,
    )


def _kill_group(pgid: int) -> None:
    """SIGKILL every process of the group; a group already gone is fine."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        # Permission: the group is gone and its id now belongs to someone else's group.
        pass


async def _feed(stream: anyio.abc.ByteSendStream, data: bytes) -> None:
    """Write ``data`` to the child's stdin and close it; a child that stopped reading is fine."""
    try:
        await stream.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


class _Capture:
    """Keeps the first ``limit`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._kept = 0
        self._dropped = 0

    async def drain(self, stream: anyio.abc.ByteReceiveStream) -> None:
        """Read to the end of ``stream``; a cancellation point."""
        async for chunk in stream:
            room = self._limit - self._kept
            if room > 0:
                self._chunks.append(chunk[:room])
                self._kept += min(room, len(chunk))
            self._dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        text = b"".join(self._chunks).decode("utf-8", errors="replace")
        if self._dropped:
            text += f"\n[... {self._dropped} more bytes truncated]"
        return text
