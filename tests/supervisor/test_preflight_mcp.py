"""MCP servers at start (``preflight.open_tool_registry``): their tools join the registry
by ``<server>.<tool>``, a role's ``<server>.*`` becomes each of them, and what cannot work
is one ``ConfigError`` naming its key before anything runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from warden.config import ConfigError, Settings, load_settings
from warden.supervisor.policy import check_policy_names
from warden.supervisor.preflight import (
    check_allowlists,
    expand_allowlists,
    open_tool_registry,
    tool_registry,
)

SERVER = [sys.executable, str(Path(__file__).parents[1] / "actors" / "tools" / "mcp_server.py")]


def settings_with(servers: dict[str, dict[str, object]], role_tools: list[str]) -> Settings:
    return load_settings(env={}, overrides={("mcp", "servers"): servers,
                                            ("roles", "code", "tools"): role_tools})


def test_a_servers_star_becomes_each_of_its_tools_sorted_and_other_names_stay() -> None:
    settings = settings_with({"t": {"url": "http://127.0.0.1:1/mcp"}},
                             ["read_file", "t.*", "t.add"])
    registry = tool_registry(settings)
    fake = type("Registry", (), {"names": lambda self: [*registry.names(), "t.b", "t.a",
                                                        "u.c"]})()
    expanded = expand_allowlists(settings, fake)  # type: ignore[arg-type]
    assert expanded.roles["code"].tools == ["read_file", "t.a", "t.b", "t.add"]
    assert expanded.roles["research"] == settings.roles["research"]


def test_a_star_of_no_configured_server_is_a_config_error_naming_the_role() -> None:
    settings = settings_with({}, ["read_file", "tickets.*"])
    with pytest.raises(ConfigError) as caught:
        expand_allowlists(settings, tool_registry(settings))
    assert caught.value.key == "roles.code.tools"
    assert "'tickets.*' names no MCP server" in str(caught.value)


@pytest.mark.anyio
async def test_a_servers_tools_join_the_registry_and_a_role_may_allowlist_them() -> None:
    settings = settings_with({"t": {"command": SERVER,
                                    "tools": {"add": {"risk": "low", "side_effects": False}}}},
                             ["read_file", "t.*"])
    async with open_tool_registry(settings) as tools:
        settings = expand_allowlists(settings, tools)
        check_allowlists(settings, tools)  # does not raise
        assert "t.add" in settings.roles["code"].tools
        assert "read_file" in tools.names()
        add, shout = tools.declaration("t.add"), tools.declaration("t.shout")
        [spec] = tools.specs(["t.add"])
    assert (add.risk, add.side_effects, add.trusted_output) == ("low", False, False)
    assert (shout.risk, shout.side_effects, shout.trusted_output) == ("medium", True, False)
    assert spec.description == "Add two integers."


@pytest.mark.anyio
async def test_the_guards_of_an_mcp_tool_are_configured_by_its_dotted_name() -> None:
    settings = load_settings(env={}, overrides={
        ("mcp", "servers"): {"t": {"command": SERVER}},
        ("policy", "tools"): {"t.add": {"max": {"a": 10}}, "t.refund": {"max": {"x": 1}}}})
    async with open_tool_registry(settings) as tools:
        with pytest.raises(ConfigError) as caught:
            check_policy_names(settings, tools)
    assert caught.value.key == "policy.tools.t.refund"  # t.add passed: it is a tool
    assert "t.add" in str(caught.value)


@pytest.mark.anyio
@pytest.mark.parametrize(("server", "key"), [
    ({"command": SERVER, "timeout_s": 116}, "mcp.servers.t.timeout_s"),
    ({"command": SERVER, "tools": {"slow": {"timeout_s": 200}}},
     "mcp.servers.t.tools.slow.timeout_s"),
])
async def test_a_timeout_the_run_would_not_wait_out_is_refused_before_starting(
        server: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        async with open_tool_registry(settings_with({"t": server}, ["read_file"])):
            pass
    assert caught.value.key == key
    assert "below limits.step_timeout_s (120)" in str(caught.value)


def test_without_mcp_servers_the_mcp_sdk_is_never_imported(tmp_path: Path) -> None:
    # It costs about 0.4 s of CPU per process (every `warden` command, every worker).
    code = ("import sys, anyio\n"
            "from warden.supervisor import cli\n"
            "from warden.supervisor.preflight import open_tool_registry\n"
            "from warden.config import load_settings\n"
            "async def main():\n"
            "    async with open_tool_registry(load_settings()) as tools:\n"
            "        assert 'write_file' in tools.names()\n"
            "anyio.run(main)\n"
            "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
