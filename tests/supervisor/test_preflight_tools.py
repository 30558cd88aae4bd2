"""A user tool that cannot be a tool is one ``ConfigError`` at start naming
``tools.<name>.<key>`` (``preflight.tool_registry``); one that can is allowlisted by
name like warden's own."""

from __future__ import annotations

from pathlib import Path

import pytest
from warden.config import ConfigError, Settings, load_settings
from warden.supervisor.preflight import check_allowlists, tool_registry

from tests.actors.tools.user_modules import write_module

SOURCE = '''
from __future__ import annotations

import socket


def good(order_id: str) -> str:
    """Fine."""
    return order_id


def star_args(*ids: str) -> str:
    """Varargs."""
    return ""


def star_kwargs(order_id: str, **more: str) -> str:
    """Keyword varargs."""
    return ""


def positional_only(order_id: str, /) -> str:
    """Positional only."""
    return ""


def untyped(order_id) -> str:
    """No hint."""
    return ""


def unsupported(sock: socket.socket) -> str:
    """A socket has no JSON schema."""
    return ""


def undocumented(order_id: str) -> str:
    return ""


def other_params(ticket: str) -> str | None:
    """Another signature."""
    return None


NOT_A_FUNCTION = 42
'''


def settings_with(tools: dict[str, dict[str, object]], role_tools: list[str] | None = None
                  ) -> Settings:
    overrides: dict[tuple[str, ...], object] = {("tools",): tools}
    if role_tools is not None:
        overrides[("roles", "code", "tools")] = role_tools
    return load_settings(env={}, overrides=overrides)


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return write_module(tmp_path, monkeypatch, SOURCE)


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"function": "no_such_module_xyz:refund"}, "function",
         ["cannot import module 'no_such_module_xyz'", "ModuleNotFoundError"]),
        ({"function": "{m}:missing"}, "function", ["has no 'missing'"]),
        ({"function": "{m}:NOT_A_FUNCTION"}, "function", ["is a int, not a function"]),
        ({"function": "{m}"}, "function", ["must be 'module:function'"]),
        ({"function": "{m}:star_args"}, "function", ["takes *ids"]),
        ({"function": "{m}:star_kwargs"}, "function", ["takes **more"]),
        ({"function": "{m}:positional_only"}, "function", ["positional-only order_id"]),
        ({"function": "{m}:untyped"}, "function", ["'order_id' has no type hint"]),
        ({"function": "{m}:unsupported"}, "function",
         ["parameter 'sock' has an unsupported type"]),
        ({"function": "{m}:undocumented"}, "function", ["has no docstring"]),
        ({"function": "{m}:good", "reconcile": "{m}:other_params"}, "reconcile",
         ["must take the parameters of", "order_id"]),
        ({"function": "{m}:good", "simulate": "{m}:missing"}, "simulate", ["has no 'missing'"]),
        ({"function": "{m}:good", "timeout_s": 0}, "timeout_s", ["greater than 0"]),
        ({"function": "{m}:good", "timeout_s": 118}, "timeout_s",
         ["below limits.step_timeout_s (120)"]),
    ],
)
def test_a_tool_that_cannot_be_made_is_one_line_naming_the_tool_and_key(
    module: str, table: dict[str, object], key: str, words: list[str],
) -> None:
    table = {k: v.format(m=module) if isinstance(v, str) else v for k, v in table.items()}
    with pytest.raises(ConfigError) as caught:
        tool_registry(settings_with({"refund": table}))
    message = str(caught.value)
    assert caught.value.key == f"tools.refund.{key}"
    assert "\n" not in message
    assert f"'tools.refund.{key}'" in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(("name", "words"), [
    ("read_file", ["'tools.read_file'", "warden's own tools"]),
    ("bad name!", ["'tools.bad name!'", "1-64 letters"]),
])
def test_a_tool_name_taken_by_warden_or_unusable_is_refused(
    module: str, name: str, words: list[str],
) -> None:
    with pytest.raises(ConfigError) as caught:
        tool_registry(settings_with({name: {"function": f"{module}:good"}}))
    for word in words:
        assert word in str(caught.value)


def test_an_unknown_key_of_a_tool_table_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"'tools\.refund\.risky'"):
        settings_with({"refund": {"function": "m:f", "risky": "high"}})


def test_a_risk_outside_low_medium_high_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"'tools\.refund\.risk'"):
        settings_with({"refund": {"function": "m:f", "risk": "extreme"}})


def test_a_role_may_allowlist_a_user_tool_by_name(module: str) -> None:
    settings = settings_with({"lookup": {"function": f"{module}:good"}},
                             role_tools=["read_file", "lookup"])
    check_allowlists(settings, tool_registry(settings))  # does not raise


def test_a_role_naming_a_tool_no_table_declares_is_refused(module: str) -> None:
    settings = settings_with({"lookup": {"function": f"{module}:good"}},
                             role_tools=["read_file", "refund"])
    with pytest.raises(ConfigError, match=r"'roles\.code\.tools'.*'refund'.*lookup"):
        check_allowlists(settings, tool_registry(settings))
