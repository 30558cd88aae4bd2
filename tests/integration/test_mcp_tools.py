"""Done means, issue 10 point 1: through the real daemon (a real nats-server, a real SQLite
journal, workers over NATS), one role uses a user tool module (a sync and an async
function, ``[tools.*]``) and an MCP stdio server written with the ``mcp`` SDK
(``[mcp.servers.*]``, ``tests/actors/tools/mcp_server.py``); the scripted model calls all
of them, and their results are in the journal."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from warden.config import Settings
from warden.supervisor.daemon import JOURNAL_FILE, Daemon

from tests.integration.harness import make_settings, run_task, running_daemon, worker_process
from tests.integration.test_user_tools import shop  # noqa: F401 - the fixture

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

MCP_SERVER = Path(__file__).parents[1] / "actors" / "tools" / "mcp_server.py"

SCRIPT = '''
[scenario.shop_mcp]
synthesis = "Refunded, and told the tickets."
[[scenario.shop_mcp.plan]]
role = "research"
instruction = "Look order o-1 up, refund 12.5 of it, and note it in the tickets."
[[scenario.shop_mcp.turns.research]]
tools = [{ name = "lookup", input = { order_id = "o-1" } },
         { name = "refund", input = { order_id = "o-1", amount = 12.5 } }]
[[scenario.shop_mcp.turns.research]]
tools = [{ name = "tickets.add", input = { a = 2, b = 40 } },
         { name = "tickets.shout", input = { text = "refunded o-1" } },
         { name = "tickets.tally", input = { item = "o-1" } },
         { name = "tickets.pid" }]
[[scenario.shop_mcp.turns.research]]
text = "Done: {last_result}"
'''

# Low risk throughout: this test is about the tools reaching the run, not about the
# approvals a higher risk (or the taint of the MCP server's untrusted output) asks for.
TOOLS = {
    "lookup": {"function": "shop.tools:lookup", "risk": "low", "side_effects": False},
    "refund": {"function": "shop.tools:refund", "risk": "low", "timeout_s": 20},
}
ROLE_TOOLS = ["list_files", "lookup", "refund", "tickets.*"]


def mcp_servers(tally: Path) -> dict[str, object]:
    return {"tickets": {
        "command": [sys.executable, str(MCP_SERVER)],
        "env": {"MCP_TALLY": str(tally)},
        "risk": "low",
        "tools": {"add": {"side_effects": False, "trusted_output": True}},
    }}


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    script = tmp_path / "shop_mcp.toml"
    script.write_text(SCRIPT, encoding="utf-8")
    return make_settings(tmp_path, models__script_files=[str(script)], tools=TOOLS,
                         mcp__servers=mcp_servers(tmp_path / "tally.txt"),
                         roles__research__tools=ROLE_TOOLS, **overrides)


def journalled_calls(daemon: Daemon, run_id: str) -> list[tuple[str, int, str]]:
    """(tool, ok, output) of every tool call of the run, in order, read from the SQLite
    file itself."""
    path = daemon.data_dir / JOURNAL_FILE
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return [(str(name), int(ok), str(output)) for name, ok, output in db.execute(
            "SELECT name, ok, output FROM tool_calls WHERE run_id = ? ORDER BY id",
            (run_id,))]


def assert_all_called(calls: list[tuple[str, int, str]], tally: Path, refunds: Path) -> int:
    """Every tool was called once and answered; returns the MCP server's pid."""
    [pid] = [output for name, ok, output in calls if name == "tickets.pid" and ok]
    assert sorted(calls) == sorted([
        ("tickets.pid", 1, pid),
        ("lookup", 1, '{"order":"o-1","status":"delivered","total":40.0}'),
        ("refund", 1, "refunded 12.5 on o-1"),
        ("tickets.add", 1, "42"),
        ("tickets.shout", 1, "REFUNDED O-1"),
        ("tickets.tally", 1, "1 items"),
    ])
    assert tally.read_text(encoding="utf-8") == "o-1\n"  # the MCP tool acted once
    assert len(refunds.read_text(encoding="utf-8").splitlines()) == 1
    return int(pid)


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_role_calls_user_function_tools_and_an_mcp_servers_tools_end_to_end(
    tmp_path: Path, shop: Path,  # noqa: F811 - the fixture
) -> None:
    async with running_daemon(settings_for(tmp_path)) as (daemon, client):
        run = await run_task(client, "refund and tell the tickets", scenario="shop_mcp")
        calls = journalled_calls(daemon, run.id)
    assert run.status == "succeeded", run.error
    assert_gone(assert_all_called(calls, tmp_path / "tally.txt", shop))  # stopped with it


async def test_a_worker_process_runs_its_own_mcp_server_for_its_role(
    tmp_path: Path, shop: Path,  # noqa: F811 - the fixture
) -> None:
    settings = settings_for(tmp_path, local_workers=False)
    servers = mcp_servers(tmp_path / "tally.txt")
    async with running_daemon(settings) as (daemon, client):
        env = {
            "PYTHONPATH": str(tmp_path / "user_code"),
            "WARDEN_MODELS__SCRIPT_FILES": json.dumps(settings.models.script_files),
            "WARDEN_ROLES__RESEARCH__TOOLS": json.dumps(ROLE_TOOLS),
            "WARDEN_TOOLS__LOOKUP__FUNCTION": "shop.tools:lookup",
            "WARDEN_TOOLS__LOOKUP__RISK": "low",
            "WARDEN_TOOLS__LOOKUP__SIDE_EFFECTS": "false",
            "WARDEN_TOOLS__REFUND__FUNCTION": "shop.tools:refund",
            "WARDEN_TOOLS__REFUND__RISK": "low",
            "WARDEN_TOOLS__REFUND__TIMEOUT_S": "20",
            "WARDEN_MCP__SERVERS": json.dumps(servers),
        }
        async with worker_process(daemon, ["research"], tmp_path / "worker",
                                  env=env) as worker:
            assert "serving warden.work.research" in worker.banner, worker.banner
            run = await run_task(client, "refund and tell the tickets", scenario="shop_mcp")
            calls = journalled_calls(daemon, run.id)
    assert run.status == "succeeded", run.error
    assert worker.returncode == 0
    assert_gone(assert_all_called(calls, tmp_path / "tally.txt", shop))  # stopped with it
