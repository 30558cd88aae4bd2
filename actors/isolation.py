"""How the sandbox is kept from the daemon: bubblewrap, an unprivileged user, or nothing.

The sandbox (``sandbox.py``) runs code a model wrote. Its environment is scrubbed in every
case; what else keeps it from the daemon's secrets depends on what this host allows, and
is chosen once per process (``isolation_in_use``), in this order:

- ``bubblewrap``: the code runs under ``bwrap`` in new PID, user, IPC, UTS (and cgroup)
  namespaces, and a new network namespace unless the role sets ``network = true``, with
  no capabilities and (bwrap 0.8+) no way to make a user namespace of its own. It
  sees a fresh ``/proc`` (its own processes only: the daemon's ``/proc/<pid>/environ``
  does not exist there), a minimal ``/dev``, a private tmpfs ``/tmp``, read-only binds of
  the system's ``/usr`` (and the ``/bin``, ``/lib*`` links or dirs), the interpreter's
  prefixes and site-packages, and a few files of ``/etc`` (TLS roots, the loader cache;
  name resolution too when the network is on) — not ``/etc`` whole, not ``$HOME``, not
  the data directory — and its workspace, read-write at its own path. ``--die-with-parent``
  and the PID namespace make the wall-clock kill total: when bwrap dies, its PID 1 dies,
  and with it every process of the namespace.
- ``uid``: without bubblewrap, when running as root, the launcher drops to ``user`` (and
  its group, no supplementary groups) before ``exec``: another uid may not read the
  daemon's ``/proc/<pid>/environ`` or memory, nor the data directory (created 0700).
  The workspaces then live under a root the user can reach (``workspaces_root``),
  handed to it before each run. Lost against bubblewrap: network isolation, and the file
  system is the host's as that user sees it (world-readable files, other runs'
  workspaces if their ids are guessed).
- ``none``: neither is possible (no working bubblewrap, not root): the code runs as the
  worker's own user, as before, with one warning line at start naming what is lost.

``SandboxSettings.isolation`` may name one of the three to require it: a worker then
refuses to start without it (``SandboxUnavailableError``).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import site
import stat
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import structlog
from warden.actors.errors import SandboxUnavailableError
from warden.config.settings import SandboxSettings

__all__ = (
    "Isolation",
    "SandboxIsolation",
    "bubblewrap_argv",
    "choose_isolation",
    "ensure_private_dir",
    "hand_over",
    "isolation_in_use",
    "workspaces_root",
)

log = structlog.get_logger("warden.sandbox")

Isolation = Literal["bubblewrap", "uid", "none"]

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = (
    "/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/alternatives", "/etc/ld.so.cache",
    "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
)  # fmt: skip
"""What of ``/etc`` the code may read: TLS roots, the loader's cache, the time zone."""
_ETC_NETWORK = (
    "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf",
    "/etc/services", "/etc/protocols",
)  # fmt: skip
"""Name resolution, bound only for a role whose ``network`` is on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxIsolation:
    """The isolation chosen for this process: ``kind``, what it needs, what it lacks.

    ``bwrap`` is the program's path (``bubblewrap``); ``uid``/``gid`` the user the code
    runs as (``uid``); ``lost`` names what is missing against bubblewrap, and ``why`` why
    nothing better was possible.
    """

    kind: Isolation
    bwrap: str | None = None
    bwrap_options: tuple[str, ...] = ()
    """Options this bwrap supports beyond the base set (``--disable-userns``, 0.8+)."""
    uid: int | None = None
    gid: int | None = None
    lost: tuple[str, ...] = ()
    why: str = ""

    @property
    def isolates_network(self) -> bool:
        return self.kind == "bubblewrap"


def choose_isolation(settings: SandboxSettings) -> SandboxIsolation:
    """The best isolation ``settings.isolation`` allows on this host.

    Blocks (it runs bwrap once to see that it works: a ``bwrap`` present where user
    namespaces are forbidden fails); call it off the event loop. Raises
    ``SandboxUnavailableError`` when the settings name an isolation that is not possible.
    """
    wanted = settings.isolation
    reasons: list[str] = []
    if wanted in ("auto", "bubblewrap"):
        bwrap, problem = _working_bwrap()
        if bwrap is not None:
            options = ("--disable-userns",) if _bwrap_runs(bwrap, "--disable-userns") else ()
            return SandboxIsolation(kind="bubblewrap", bwrap=bwrap, bwrap_options=options)
        reasons.append(problem)
        if wanted == "bubblewrap":
            raise SandboxUnavailableError("isolation", "bubblewrap", problem)
    if wanted in ("auto", "uid"):
        ids, problem = _unprivileged_user(settings.user)
        if ids is not None:
            return SandboxIsolation(
                kind="uid", uid=ids[0], gid=ids[1], why="; ".join(reasons),
                lost=("network isolation", "file system isolation"),
            )
        reasons.append(problem)
        if wanted == "uid":
            raise SandboxUnavailableError("isolation", "uid", problem)
    return SandboxIsolation(
        kind="none", why="; ".join(reasons) or "sandbox.isolation is 'none'",
        lost=("PID and user isolation", "network isolation", "file system isolation"),
    )


_chosen: dict[tuple[str, str], SandboxIsolation] = {}


async def isolation_in_use(settings: SandboxSettings) -> SandboxIsolation:
    """The isolation of this process for ``settings``: chosen on the first call (in a
    thread: it starts bwrap once) and logged then, in one line — ``sandbox_isolation``,
    or ``sandbox_degraded`` (a warning naming what is lost) — then remembered.

    A cancellation point on the first call. Raises ``SandboxUnavailableError`` as
    ``choose_isolation`` does.
    """
    key = (settings.isolation, settings.user)
    chosen = _chosen.get(key)
    if chosen is None:
        chosen = await anyio.to_thread.run_sync(choose_isolation, settings)
        if key not in _chosen:
            _chosen[key] = chosen
            if chosen.lost:
                log.warning("sandbox_degraded", sandbox=chosen.kind, lost=", ".join(chosen.lost),
                            why=chosen.why)
            else:
                log.info("sandbox_isolation", sandbox=chosen.kind)
        chosen = _chosen[key]
    return chosen


def _working_bwrap() -> tuple[str | None, str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "bubblewrap (bwrap) is not installed"
    try:
        done = _bwrap_probe(bwrap)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"bubblewrap does not run here: {exc}"
    if done.returncode != 0:
        first = (done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[0]
        return None, f"bubblewrap cannot create namespaces here: {first}"
    return bwrap, ""


def _bwrap_runs(bwrap: str, *options: str) -> bool:
    try:
        return _bwrap_probe(bwrap, *options).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _bwrap_probe(bwrap: str, *options: str) -> subprocess.CompletedProcess[bytes]:
    probe = [
        bwrap, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--unshare-net", "--die-with-parent", "--cap-drop", "ALL", *options,
        "--ro-bind", "/", "/", "--proc", "/proc", "--", "/bin/sh", "-c", "exit 0",
    ]  # fmt: skip
    return subprocess.run(probe, capture_output=True, timeout=30, env={}, check=False)


def _unprivileged_user(user: str) -> tuple[tuple[int, int] | None, str]:
    if os.geteuid() != 0:
        return None, "not running as root, so the code cannot run as another user"
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None, f"sandbox.user {user!r} does not exist"
    if entry.pw_uid == 0:
        return None, f"sandbox.user {user!r} is root"
    uid, gid = entry.pw_uid, entry.pw_gid
    for needed in {Path(os.path.realpath(sys.executable)), Path(sys.prefix),
                   Path(sys.base_prefix)}:
        if not _reachable(needed, uid, gid):
            return None, (f"user {user!r} cannot reach the interpreter at {str(needed)!r} "
                          "(a directory on the way is closed to it)")
    return (uid, gid), ""


def _reachable(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` may search every directory down to ``path``."""
    for directory in [*reversed(path.parents), path]:
        try:
            info = directory.stat()
        except OSError:
            return False
        if not stat.S_ISDIR(info.st_mode):
            continue
        if info.st_uid == uid:
            bit = stat.S_IXUSR
        elif info.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def bubblewrap_argv(
    isolation: SandboxIsolation, *, cwd: Path, env: Mapping[str, str], network: bool
) -> list[str]:
    """The bwrap command line (up to ``--``) that runs a program in ``cwd`` with ``env``
    and nothing else of ours (see the module docstring for what is bound).

    ``--cap-drop ALL``: bwrap started by root keeps every capability inside its user
    namespace, where uid 0 is the real root: measured, code could then remount the
    read-only ``/usr`` read-write and write to the host's. ``--disable-userns`` (where
    this bwrap has it) keeps it from making a namespace of its own to get them back
    (``test_sandboxed_code_has_no_capabilities_and_cannot_remount_the_system``).
    """
    assert isolation.bwrap is not None
    argv = [
        isolation.bwrap, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--cap-drop", "ALL", *isolation.bwrap_options,
    ]  # fmt: skip
    if not network:
        argv.append("--unshare-net")
    argv += ["--die-with-parent", "--new-session",
             "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for path in _python_dirs():
        argv += ["--ro-bind", path, path]
    for path in (*_ETC_FILES, *(_ETC_NETWORK if network else ())):
        argv += ["--ro-bind-try", path, path]
    where = str(cwd)
    argv += ["--bind", where, where, "--chdir", where, "--clearenv"]
    for name, value in env.items():
        argv += ["--setenv", name, value]
    argv.append("--")
    return argv


def _python_dirs() -> list[str]:
    """The interpreter's prefixes and site-packages not already under a system dir, the
    outermost of each nest only."""
    candidates = {
        os.path.realpath(path)
        for path in (
            sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
            *site.getsitepackages(),
        )
        if os.path.isdir(path)
    }  # fmt: skip
    kept: list[str] = []
    for path in sorted(candidates, key=len):
        covered = [*_SYSTEM_DIRS, *kept]
        if not any(path == top or path.startswith(top.rstrip("/") + "/") for top in covered):
            kept.append(path)
    return kept


def workspaces_root(data_dir: Path, isolation: SandboxIsolation) -> Path:
    """Where a worker keeps its runs' workspaces: ``<data_dir>/workspaces``, except under
    the ``uid`` isolation, whose user may not enter the data directory (0700): then a
    directory of the system's temp dir named after the data directory (mode 0711: the
    user may enter its own workspace but not list the others). Creates it; blocks."""
    if isolation.kind != "uid":
        return (data_dir / "workspaces").resolve()
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    root = Path(tempfile.gettempdir()) / f"warden-workspaces-{digest}"
    try:
        root.mkdir(mode=0o711)
    except FileExistsError:
        info = root.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise SandboxUnavailableError(
                "isolation", "uid", f"{str(root)!r} exists and is not a directory of ours"
            ) from None
    root.chmod(0o711)
    return root


def hand_over(workspace: Path, isolation: SandboxIsolation) -> None:
    """Give the ``uid`` isolation's user the workspace: every entry (symlinks not
    followed) owned by it, so code may change what the file tools wrote. Blocks; a
    no-op under the other isolations."""
    if isolation.kind != "uid" or isolation.uid is None or isolation.gid is None:
        return
    uid, gid = isolation.uid, isolation.gid
    os.chown(workspace, uid, gid, follow_symlinks=False)
    os.chmod(workspace, 0o700)
    for _top, dirs, files, top_fd in os.fwalk(workspace, follow_symlinks=False):
        for name in (*dirs, *files):
            try:
                os.chown(name, uid, gid, dir_fd=top_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) if missing and make it 0700: the data directory,
    which holds the journal and credentials, is closed to every other user (the ``uid``
    sandbox's too). Blocks. An existing directory of ours that is open to others is
    closed, with a log line; one we do not own is left alone."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_mode & 0o077 and info.st_uid == os.geteuid():
        path.chmod(0o700)
        log.info("data_dir_closed", path=str(path), was=oct(stat.S_IMODE(info.st_mode)))

