"""``[mcp]`` settings: a server reached exactly one way, names and numbers in range, each
mistake one ConfigError naming its key; the cautious defaults."""

from __future__ import annotations

import typing

import pytest
from warden.config import ConfigError, McpServerSettings, Risk, load_settings
from warden.config.mcp import McpToolSettings


def load(**mcp: object) -> None:
    load_settings(env={}, overrides={("mcp", k): v for k, v in mcp.items()})


def test_a_server_and_its_tools_default_to_medium_risk_side_effects_untrusted_output() -> None:
    server = McpServerSettings(command=["tickets-mcp"])
    assert (server.risk, server.side_effects, server.trusted_output) == ("medium", True, False)
    assert McpToolSettings() == McpToolSettings(risk=None, side_effects=None,
                                                trusted_output=None, timeout_s=None)


def test_the_risk_words_are_the_settings_risk_words() -> None:
    # config/mcp.py spells the Literal itself (settings.py imports it).
    spelled = typing.get_type_hints(McpServerSettings)["risk"]
    assert typing.get_args(spelled) == typing.get_args(Risk)


def test_a_server_with_a_command_loads() -> None:
    settings = load_settings(env={}, overrides={("mcp", "servers"): {
        "tickets": {"command": ["python", "-m", "tickets"], "env": {"DB": "/srv/t.db"},
                    "tools": {"search": {"risk": "low", "side_effects": False}}}}})
    server = settings.mcp.servers["tickets"]
    assert server.command == ["python", "-m", "tickets"] and server.env == {"DB": "/srv/t.db"}
    assert server.tools["search"].risk == "low"


@pytest.mark.parametrize(("server", "key", "problem"), [
    ({}, "mcp.servers.tickets", "needs exactly one of 'command' (stdio) and 'url' (HTTP)"),
    ({"command": ["x"], "url": "http://h/mcp"}, "mcp.servers.tickets",
     "needs exactly one of"),
    ({"command": []}, "mcp.servers.tickets.command", "must name a program to run"),
    ({"command": [""]}, "mcp.servers.tickets.command", "must name a program to run"),
    ({"url": "ftp://h/mcp"}, "mcp.servers.tickets.url", "must be an http:// or https:// URL"),
    ({"url": "http://h/mcp", "cwd": "/srv"}, "mcp.servers.tickets.cwd", "not 'url'"),
    ({"command": ["x"], "env": {"A=B": "c"}}, "mcp.servers.tickets.env",
     "is not an environment variable name"),
    ({"command": ["x"], "timeout_s": 0}, "mcp.servers.tickets.timeout_s",
     "must be greater than 0"),
    ({"command": ["x"], "tools": {"search": {"timeout_s": -1}}},
     "mcp.servers.tickets.tools.search.timeout_s", "must be greater than 0"),
])
def test_a_bad_server_is_one_config_error_naming_its_key(
        server: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(servers={"tickets": server})
    assert caught.value.key == key
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_server_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load(servers={"my.tickets": {"command": ["x"]}})
    assert caught.value.key == "mcp.servers.my.tickets"


def test_an_env_value_is_never_shown_in_the_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load(servers={"tickets": {"command": ["x"], "env": {"": "s3cret-token"}}})
    assert "s3cret-token" not in str(caught.value)


def test_an_unknown_server_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load(servers={"tickets": {"comand": ["x"]}})
    assert caught.value.key.endswith(".comand")


@pytest.mark.parametrize("key", ["restart_base_s", "restart_max_s"])
def test_a_restart_wait_not_above_zero_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**{key: 0})
    assert caught.value.key == f"mcp.{key}"
