"""Code run for the model cannot see the daemon: not its environment, its data directory
or its owner's ``~/.ssh``; and it has no network unless its role turns it on.

The parent here is a real process (``HELPER``) started with a canary API key in its
environment from exec on (``/proc/<pid>/environ`` shows a process's environment as it was
exec'd, so setting it in this test process would prove nothing), a ``HOME`` whose
``.ssh/id_ed25519`` holds the canary, and a data directory with ``canary.txt``. It runs
the probe (``sandbox_probe.py``) through the real ``run_python`` tool, as a worker does.
Under ``none`` the probe finds the key in the parent's environment: that is the control
showing the probe would catch a leak, and what the warning of the ``none`` isolation
says is lost.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from warden.actors import isolation as isolation_module
from warden.actors.isolation import SandboxIsolation, ensure_private_dir, workspaces_root
from warden.actors.sandbox import run_sandboxed
from warden.actors.tools import default_registry
from warden.actors.worker import execute_tool
from warden.bus.wire import ToolRequest
from warden.config.settings import SandboxSettings

from tests.actors.conftest import require
from tests.actors.sandbox_probe import new_canary
from tests.integration.warden_process import child_env

ROOT = Path(__file__).resolve().parents[2]

HELPER = """
import json, os, sys
from pathlib import Path

import anyio
from warden.actors.isolation import choose_isolation, ensure_private_dir, workspaces_root
from warden.actors.tools import ToolContext, default_registry
from warden.actors.workspace import Workspace
from warden.config.settings import SandboxSettings

from tests.actors.sandbox_probe import probe_code


async def main() -> None:
    isolation, data, home = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    settings = SandboxSettings(isolation=isolation, timeout_s=60.0)
    ensure_private_dir(data)
    root = workspaces_root(data, choose_isolation(settings)) / "run-1"
    root.mkdir(parents=True, exist_ok=True)
    ctx = ToolContext(workspace=Workspace(root), sandbox=settings, role="code",
                      run_id="run-1", step=0, call_index=0, data_dir=data)
    code = probe_code(parent_pid=os.getpid(), data_dir=str(data), home=home)
    record = await default_registry().call("run_python", {"code": code}, ctx,
                                           allowlist=["run_python"])
    own = Path(f"/proc/{os.getpid()}/environ").read_bytes().decode()
    print(json.dumps({"ok": record.ok, "output": record.output,
                      "key_in_own_environ": os.environ["ANTHROPIC_API_KEY"] in own}))


anyio.run(main)
"""


def run_probe(tmp_path: Path, isolation: str) -> tuple[str, dict[str, object]]:
    """Run the probe under ``isolation`` from a parent holding a canary key, home and data
    dir; the canary, and the helper's report (its tool output under ``output``)."""
    canary = new_canary()
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".ssh" / "id_ed25519").write_text(f"-----BEGIN KEY-----\n{canary}\n")
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    data = tmp_path / "data"
    data.mkdir()
    (data / "canary.txt").write_text(canary)
    env = {**child_env(canary), "HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", HELPER, isolation, str(data), str(home)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["key_in_own_environ"]  # the parent really holds the key
    return canary, report


def probe_result(output: str) -> dict[str, object]:
    line = next(line for line in output.splitlines() if line.startswith("PROBE "))
    result = json.loads(line.removeprefix("PROBE "))
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize("isolation", ["bubblewrap", "uid"])
def test_model_code_finds_the_canary_in_nothing_it_can_read(
    tmp_path: Path, isolation: str
) -> None:
    require(isolation)
    canary, report = run_probe(tmp_path, isolation)
    output = str(report["output"])
    result = probe_result(output)
    assert result["read"] > 0  # it did read: its own environment at least
    assert result["found"] == {}
    assert canary not in output


def test_without_isolation_the_probe_finds_the_key_in_the_parents_environment(
    tmp_path: Path,
) -> None:
    """The control: what the ``none`` isolation loses, and proof that the probe sees a
    leak when there is one. Its own environment stays scrubbed even so."""
    require("none")
    canary, report = run_probe(tmp_path, "none")
    found = probe_result(str(report["output"]))["found"]
    assert isinstance(found, dict)
    assert found.get("/proc/<parent>/environ") == [canary]
    assert "os.environ" not in found


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP socket listening on the host's loopback; its port."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


async def connect_from_the_sandbox(tmp_path: Path, port: int, *, network: bool) -> str:
    workspaces = tmp_path / "workspaces"
    code = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n"
        "    print('connected')\n"
        "except OSError as exc:\n"
        "    print('refused', type(exc).__name__)\n"
    )
    reply = await execute_tool(
        default_registry(),
        ToolRequest(run_id="run-net", step=0, role="code", call_index=0, name="run_python",
                    arguments={"code": code}, idempotency_key="k"),
        allowlist=["run_python"], workspaces=workspaces, data_dir=tmp_path,
        sandbox=SandboxSettings(isolation="bubblewrap"), network=network,
    )
    assert reply.record is not None
    return reply.record.output


@pytest.mark.anyio
async def test_the_sandbox_has_no_network_by_default(tmp_path: Path, listener: int) -> None:
    require("bubblewrap")
    output = await connect_from_the_sandbox(tmp_path, listener, network=False)
    assert "refused" in output


@pytest.mark.anyio
async def test_a_role_with_network_on_reaches_the_network(tmp_path: Path, listener: int) -> None:
    require("bubblewrap")
    output = await connect_from_the_sandbox(tmp_path, listener, network=True)
    assert "connected" in output


def test_the_data_dir_is_created_private(tmp_path: Path) -> None:
    fresh, opened = tmp_path / "a" / "data", tmp_path / "open"
    opened.mkdir(mode=0o755)
    opened.chmod(0o755)
    ensure_private_dir(fresh)
    ensure_private_dir(opened)
    assert (fresh.stat().st_mode & 0o777, opened.stat().st_mode & 0o777) == (0o700, 0o700)
    assert os.access(fresh, os.W_OK)


@pytest.fixture
def uid_isolation(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxIsolation]:
    """The ``uid`` isolation as root with ``nobody`` gives it, taken as chosen even where
    the interpreter is out of that user's reach (it is here, under /root: the code run
    below is a shell, which is not)."""
    if os.geteuid() != 0:
        pytest.skip("uid isolation not checked: not running as root")
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("uid isolation not checked: no user 'nobody'")
    chosen = SandboxIsolation(kind="uid", uid=entry.pw_uid, gid=entry.pw_gid,
                              lost=("network isolation", "file system isolation"))
    monkeypatch.setitem(isolation_module._chosen, ("uid", "nobody"), chosen)
    yield chosen


@pytest.mark.anyio
async def test_the_uid_isolation_runs_code_as_the_user_in_a_workspace_handed_to_it(
    tmp_path: Path, uid_isolation: SandboxIsolation
) -> None:
    data = tmp_path / "data"
    ensure_private_dir(data)
    (data / "canary.txt").write_text(new_canary())
    root = workspaces_root(data, uid_isolation)
    try:
        workspace = root / "run-1"
        workspace.mkdir()
        (workspace / "written_by_the_worker.txt").write_text("x")  # root's, as write_file's
        script = (
            "id -u; id -G\n"
            "cat /proc/$PPID/environ >/dev/null 2>&1 && echo parent-environ-read\n"
            f"cat {data}/canary.txt >/dev/null 2>&1 && echo data-dir-read\n"
            "echo y >> written_by_the_worker.txt && echo workspace-writable\n"
        )
        result = await run_sandboxed(["sh", "-c", script], cwd=workspace,
                                     settings=SandboxSettings(isolation="uid"))
    finally:
        shutil.rmtree(root)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split("\n") == [
        str(uid_isolation.uid), str(uid_isolation.gid), "workspace-writable", "",
    ]


@pytest.mark.anyio
async def test_sandboxed_code_has_no_capabilities_and_cannot_remount_the_system(
    tmp_path: Path,
) -> None:
    """bwrap run by root keeps every capability in its namespace unless told otherwise,
    and there uid 0 is the host's root: this was a way to write to the host's /usr."""
    require("bubblewrap")
    if shutil.which("mount") is None:
        pytest.skip("remounting not checked: no mount program")
    mark = f"warden-sandbox-escape-{os.getpid()}-{tmp_path.name}"
    script = (
        "grep CapEff /proc/self/status\n"
        "mount -o remount,rw,bind /usr 2>/dev/null && echo remounted\n"
        f"touch /usr/{mark} 2>/dev/null && echo written\n"
        "unshare -Urm true 2>/dev/null && echo own-user-namespace\n"
    )
    try:
        result = await run_sandboxed(["sh", "-c", script], cwd=tmp_path,
                                     settings=SandboxSettings(isolation="bubblewrap"))
    finally:
        escaped = anyio.Path("/usr") / mark
        if await escaped.exists():
            await escaped.unlink()
            pytest.fail("sandboxed code wrote to the host's /usr")
    assert result.stdout.split() == ["CapEff:", "0000000000000000"]
