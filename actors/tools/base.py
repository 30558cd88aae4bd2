"""What a tool is: its context, the ``Tool`` protocol, ``ToolBase``, and its declaration.

A tool is a class with a ``name``, a ``description``, an ``Arguments`` msgspec Struct
(``forbid_unknown_fields=True``) and an async ``run``. The Struct's JSON schema, inlined
(no ``$ref``/``$defs``), is the tool's ``input_schema`` in the Messages API.

Four class-level declarations tell the parent how to treat a call before it makes one;
``ToolDeclaration`` is their one record, and ``ToolRegistry.declaration(name)`` the one
place the parent reads them from:

- ``side_effects``: does it change the workspace, the world, or run code;
- ``idempotent_by_key``: is running it again with the same key (``run_id``/``step``/
  ``call_index``) the same as running it once, so a replay may repeat it rather than
  need its journaled result;
- ``reconciles``: can ``reconcile`` tell whether an interrupted call already acted;
- ``check``: does it verify work (``run_tests``): a step whose check failed or timed out
  cannot succeed;
- ``risk`` (``low``/``medium``/``high``), ``timeout_s`` (its own deadline, else the
  sandbox's), ``simulates`` (can it say what a dry run returns) and ``trusted_output``
  (may its output be read as data the run can trust, or can it carry someone else's
  instructions: untrusted output taints the step, issue 10 point 7): carried for the
  guards of the call gate; a user's function tool (``function.py``) sets them from its
  ``[tools.<name>]`` table, warden's own tools keep ``ToolBase``'s.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Generic, Protocol, TypeVar

import msgspec
from warden.actors.errors import ToolArgumentsError, ToolError
from warden.actors.workspace import Workspace
from warden.bus.wire import ToolSpec
from warden.config.settings import Risk, SandboxSettings

__all__ = (
    "MAX_TOOL_OUTPUT_BYTES",
    "Tool",
    "ToolBase",
    "ToolContext",
    "ToolDeclaration",
    "WorkspacePath",
    "input_schema",
)

MAX_TOOL_OUTPUT_BYTES = 32 * 1024
"""Default bound of what one tool call returns to the model."""

ArgsT = TypeVar("ArgsT", bound=msgspec.Struct)

WorkspacePath = Annotated[str, msgspec.Meta(description="A path relative to the workspace root.")]
"""The type of an argument that names a path in the run's workspace."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolContext:
    """Where and for whom a tool call runs. ``call_index`` numbers calls within a step."""

    workspace: Workspace
    sandbox: SandboxSettings
    role: str
    run_id: str
    step: int
    call_index: int
    idempotency_key: str = ""
    """Derived by the parent from (run, step, attempt, turn, call); the same on a replay."""
    data_dir: Path | None = None
    """The worker's data directory (where ``ledger_append`` keeps ``ledger.txt``)."""
    network: bool = False
    """Whether code the tool runs in the sandbox may use the network (the role's
    ``network``)."""


class Tool(Protocol):
    """What the registry needs of a tool; ``ToolBase`` subclasses provide it."""

    @property
    def name(self) -> str: ...
    @property
    def side_effects(self) -> bool: ...
    @property
    def idempotent_by_key(self) -> bool: ...
    @property
    def reconciles(self) -> bool: ...
    @property
    def check(self) -> bool: ...
    @property
    def risk(self) -> Risk: ...
    @property
    def timeout_s(self) -> float | None: ...
    @property
    def simulates(self) -> bool: ...
    @property
    def trusted_output(self) -> bool: ...
    def spec(self) -> ToolSpec: ...
    async def invoke(self, arguments: Mapping[str, object], ctx: ToolContext) -> object: ...
    async def reconcile(self, arguments: Mapping[str, object], ctx: ToolContext) -> str | None:
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolDeclaration:
    """What the parent must know of a tool before calling it (the module docstring says
    what each field means). Built from the tool's class attributes by ``of``; never
    written by hand, so the tool stays the one source."""

    name: str
    side_effects: bool
    idempotent_by_key: bool
    reconciles: bool
    check: bool
    risk: Risk = "low"
    timeout_s: float | None = None
    simulates: bool = False
    trusted_output: bool = True

    @classmethod
    def of(cls, tool: Tool) -> ToolDeclaration:
        """The declaration of ``tool``; pure, does not block."""
        return cls(
            name=tool.name,
            side_effects=tool.side_effects,
            idempotent_by_key=tool.idempotent_by_key,
            reconciles=tool.reconciles,
            check=tool.check,
            risk=tool.risk,
            timeout_s=tool.timeout_s,
            simulates=tool.simulates,
            trusted_output=tool.trusted_output,
        )


class ToolBase(abc.ABC, Generic[ArgsT]):
    """A tool whose arguments are the Struct ``Arguments``. Subclasses implement ``run``
    and override the declarations that differ from these defaults (a read-only tool that
    verifies nothing)."""

    name: ClassVar[str]
    description: ClassVar[str]
    side_effects: ClassVar[bool] = False
    idempotent_by_key: ClassVar[bool] = True
    reconciles: ClassVar[bool] = False
    """Whether ``reconcile`` can tell if an interrupted call already acted."""
    check: ClassVar[bool] = False
    """Whether the tool verifies work: a step whose check failed or timed out cannot
    succeed."""
    risk: ClassVar[Risk] = "low"
    timeout_s: ClassVar[float | None] = None
    """``None``: the sandbox's ``timeout_s`` bounds a call."""
    simulates: ClassVar[bool] = False
    trusted_output: ClassVar[bool] = True
    """``False``: what the tool returns may carry instructions from outside (a web page,
    a ticket, a file the run did not write); reading it taints the step."""
    Arguments: type[ArgsT]

    def spec(self) -> ToolSpec:
        """The tool as the model sees it."""
        schema = input_schema(self.Arguments)
        return ToolSpec(name=self.name, description=self.description, input_schema=schema)

    def parse(self, arguments: Mapping[str, object]) -> ArgsT:
        """Convert raw JSON arguments; raises ``ToolArgumentsError`` naming the field."""
        try:
            return msgspec.convert(dict(arguments), self.Arguments)
        except msgspec.ValidationError as exc:
            raise ToolArgumentsError(self.name, str(exc)) from None

    async def invoke(self, arguments: Mapping[str, object], ctx: ToolContext) -> object:
        """Parse, then run. Returns whatever ``run`` returned; the registry checks it."""
        return await self.run(self.parse(arguments), ctx)

    async def reconcile(self, arguments: Mapping[str, object], ctx: ToolContext) -> str | None:
        """After a crash between a call's intent and its outcome: the outcome if the call
        with ``ctx.idempotency_key`` had acted, ``None`` if it had not. Raises
        ``ToolError`` when it cannot tell. Only tools with ``reconciles = True``."""
        raise ToolError(self.name, "has no reconcile hook")

    async def simulate(self, arguments: Mapping[str, object], ctx: ToolContext) -> str:
        """What a dry run of the call returns, without acting (the registry asks only tools
        with ``simulates = True``). Raises ``ToolError`` (``ToolArgumentsError`` for bad
        arguments)."""
        raise ToolError(self.name, "has no simulate hook")

    @abc.abstractmethod
    async def run(self, args: ArgsT, ctx: ToolContext) -> str:
        """Do the work; a cancellation point. Raises ``ToolError`` for what the model
        can correct (``ToolTimeoutError`` when it ran out of time); anything else is a
        crash."""


def input_schema(arguments: type[msgspec.Struct]) -> dict[str, object]:
    """The JSON schema of ``arguments`` with every ``$ref`` replaced by its definition."""
    schema = msgspec.json.schema(arguments)
    definitions = schema.pop("$defs", {})

    def inline(node: object) -> object:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                return inline(definitions[ref.rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    inlined = inline(schema)
    assert isinstance(inlined, dict)  # a Struct's schema is an object
    return inlined
