"""A worker's ``ToolRequest`` in mode ``simulate`` (a dry run): the tool's ``simulate``
hook answers, nothing acts; a tool without one, or not allowlisted, is ``ok=False``."""

from __future__ import annotations

from pathlib import Path

import pytest
from warden.actors.tools import default_registry
from warden.actors.worker import execute_tool
from warden.bus.wire import ToolRequest
from warden.config import SandboxSettings

pytestmark = pytest.mark.anyio


async def simulate(tmp_path: Path, name: str, arguments: dict[str, object],
                   allowlist: list[str]) -> tuple[bool, str]:
    reply = await execute_tool(
        default_registry(),
        ToolRequest(run_id="dry-r-1", step=0, role="code", call_index=0, name=name,
                    arguments=arguments, idempotency_key="dry-r-1/e0/s0/a0/t0/c0",
                    mode="simulate"),
        allowlist=allowlist, workspaces=tmp_path / "workspaces", data_dir=tmp_path,
        sandbox=SandboxSettings(),
    )
    assert reply.error is None and reply.record is not None
    return reply.record.ok, reply.record.output


async def test_a_simulate_request_answers_with_the_tools_simulation(tmp_path: Path) -> None:
    ok, output = await simulate(tmp_path, "ledger_append", {"text": "x"}, ["ledger_append"])

    assert (ok, output) == (True, "would append to ledger.txt as dry-r-1/e0/s0/a0/t0/c0: 'x'")
    assert not (tmp_path / "ledger.txt").exists()


async def test_a_tool_without_a_simulate_hook_is_not_run_in_simulate_mode(
    tmp_path: Path
) -> None:
    ok, output = await simulate(tmp_path, "write_file", {"path": "a.txt", "content": "b"},
                                ["write_file"])

    assert (ok, output) == (False, "tool 'write_file' cannot simulate a call")
    assert not (tmp_path / "workspaces" / "dry-r-1" / "a.txt").exists()


async def test_a_tool_outside_the_allowlist_is_not_simulated(tmp_path: Path) -> None:
    ok, output = await simulate(tmp_path, "ledger_append", {"text": "x"}, ["echo"])

    assert not ok and "not in the allowlist" in output
