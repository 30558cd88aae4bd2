"""The CLI's exit codes for what escapes a command, judged by an exception's leaves: a
task group wraps its tasks' errors in exception groups, and a user's mistake raised in a
task is still one line and exit 2 (the commands themselves: tests/integration/
test_cli_errors.py)."""

from __future__ import annotations

import pytest
from warden.bus.errors import BusConnectionError
from warden.config import ConfigError
from warden.supervisor.cli import UsageError, exit_code
from warden.supervisor.errors import DaemonError


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("models.provider", "anthropic", "needs ANTHROPIC_API_KEY to be set"),
        ExceptionGroup("tg", [ConfigError("models.provider", "anthropic", "needs a key")]),
        ExceptionGroup("outer", [ExceptionGroup("inner", [
            DaemonError("a daemon already serves it"), UsageError("no daemon")])]),
        BusConnectionError("refused", operation="connect", retryable=True),
    ],
)
def test_a_users_error_is_exit_2_and_one_line_naming_the_first(
    error: BaseException, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(error) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warden: ")


def test_deadlines_are_exit_3_also_as_a_group(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(TimeoutError()) == 3
    assert exit_code(ExceptionGroup("tg", [TimeoutError(), TimeoutError()])) == 3
    assert capsys.readouterr().err.splitlines() == ["warden: timed out (--timeout)"] * 2


def test_ctrl_c_is_130_wherever_it_is() -> None:
    assert exit_code(KeyboardInterrupt()) == 130
    assert exit_code(BaseExceptionGroup("tg", [KeyboardInterrupt(), TimeoutError()])) == 130


@pytest.mark.parametrize(
    "error",
    [RuntimeError("a defect"), ExceptionGroup("tg", [ConfigError("k", 1, "bad"),
                                                     RuntimeError("a defect")])],
)
def test_a_defect_is_not_hidden_behind_a_code(
    error: BaseException, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(error) is None  # main re-raises it: its traceback is shown
    assert capsys.readouterr().err == ""
