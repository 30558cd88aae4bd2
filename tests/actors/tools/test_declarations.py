"""Each tool declares how the parent must treat its calls; ``ToolRegistry.declaration``
is the one place the parent reads that from."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest
from warden.actors.errors import ToolError, UnknownToolError
from warden.actors.tools import (
    ToolBase,
    ToolContext,
    ToolDeclaration,
    ToolRegistry,
    default_registry,
)


def test_every_built_in_tool_declares_side_effects_idempotency_reconcile_and_check() -> None:
    registry = default_registry()
    declared = {
        name: (d.side_effects, d.idempotent_by_key, d.reconciles, d.check)
        for name in registry.names()
        for d in [registry.declaration(name)]
    }
    assert declared == {
        "echo": (False, True, False, False),
        "grep": (False, True, False, False),
        "ledger_append": (True, False, True, False),
        "list_files": (False, True, False, False),
        "read_file": (False, True, False, False),
        "run_python": (True, False, False, False),
        "run_tests": (True, False, False, True),
        "write_file": (True, True, False, False),
    }


def test_the_built_in_tools_that_act_are_medium_risk_and_the_readers_low() -> None:
    registry = default_registry()
    risks = {name: registry.declaration(name).risk for name in registry.names()}
    assert risks == {"echo": "low", "grep": "low", "list_files": "low", "read_file": "low",
                     "ledger_append": "medium", "run_python": "medium", "run_tests": "medium",
                     "write_file": "medium"}


def test_run_tests_is_the_only_built_in_check() -> None:
    registry = default_registry()
    assert [name for name in registry.names() if registry.declaration(name).check] == ["run_tests"]


def test_a_declaration_is_a_frozen_record_named_for_its_tool() -> None:
    declaration = default_registry().declaration("write_file")
    assert declaration == ToolDeclaration(
        name="write_file", side_effects=True, idempotent_by_key=True, reconciles=False,
        check=False, risk="medium",
    )  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        declaration.check = True  # type: ignore[misc]


def test_a_declaration_says_what_the_tool_itself_says() -> None:
    registry = default_registry()
    for name in registry.names():
        tool, declaration = registry.get(name), registry.declaration(name)
        assert (tool.side_effects, tool.idempotent_by_key, tool.reconciles, tool.check) == (
            declaration.side_effects, declaration.idempotent_by_key, declaration.reconciles,
            declaration.check,
        )  # fmt: skip


class NoArgs(msgspec.Struct, forbid_unknown_fields=True):
    pass


class Lint(ToolBase[NoArgs]):
    """A tool of a user's own that verifies work."""

    name = "lint"
    description = "test double"
    check = True
    Arguments = NoArgs

    async def run(self, args: NoArgs, ctx: ToolContext) -> str:
        return "clean"


class Note(ToolBase[NoArgs]):
    """A tool of a user's own that declares nothing: the defaults."""

    name = "note"
    description = "test double"
    Arguments = NoArgs

    async def run(self, args: NoArgs, ctx: ToolContext) -> str:
        return "noted"


def test_a_tool_of_ones_own_is_a_check_only_when_it_says_so() -> None:
    registry = ToolRegistry([Lint(), Note()])
    assert registry.declaration("lint").check
    assert registry.declaration("note") == ToolDeclaration(
        name="note", side_effects=False, idempotent_by_key=True, reconciles=False, check=False
    )


def test_the_declaration_of_a_tool_the_registry_lacks_is_an_unknown_tool_error() -> None:
    with pytest.raises(UnknownToolError) as caught:
        ToolRegistry([Lint(), Note()]).declaration("rm_rf")
    error = caught.value
    assert (error.tool, error.known, error.retryable) == ("rm_rf", ("lint", "note"), False)
    assert str(error) == "tool 'rm_rf': no such tool; known: ['lint', 'note']"
    assert isinstance(error, ToolError)  # a model asking for it is told, not crashed
