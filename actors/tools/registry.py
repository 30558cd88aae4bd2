"""The tool registry: the tools by name, their declarations, and the one door to call them.

``ToolRegistry.call`` is the one door, and its contract is:

- a tool not in the role's allowlist is refused (``ToolNotAllowedError``);
- a tool the registry does not hold is refused (``UnknownToolError``);
- the arguments are converted with ``msgspec.convert``; a mismatch is a
  ``ToolArgumentsError`` naming the field (missing, wrong type, unknown);
- the tool runs under a deadline (its declared ``timeout_s``, else the sandbox timeout,
  plus a grace period); past it the
  call is stopped (``ToolTimeoutError``);
- a ``ToolError`` is an answer, not a crash: it becomes a ``ToolCallRecord`` with
  ``ok=False`` and the error's message as output, so the model can read it and correct
  itself; a ``ToolTimeoutError`` (the registry's deadline, or the sandbox's) also sets
  ``timed_out=True``. Any other exception propagates (a crash, for the supervisor);
- the output must be a ``str`` (anything else is a defect in the tool: ``TypeError``,
  a crash) and is truncated to ``max_output_bytes`` with a marker.

``ToolRegistry.declaration(name)`` is the one source of a tool's declarations
(``ToolDeclaration``: side effects, idempotency, reconcile, check) for the parent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import anyio
import structlog
from warden.actors.errors import ToolError, ToolNotAllowedError, ToolTimeoutError, UnknownToolError
from warden.actors.tools.base import MAX_TOOL_OUTPUT_BYTES, Tool, ToolContext, ToolDeclaration
from warden.actors.tools.echo import Echo
from warden.actors.tools.files import Grep, ListFiles, ReadFile, WriteFile
from warden.actors.tools.function import load_function_tool
from warden.actors.tools.ledger import LedgerAppend
from warden.actors.tools.python import RunPython, RunTests
from warden.bus.wire import ToolCallRecord, ToolSpec
from warden.config import ToolSettings

__all__ = ("TIMEOUT_GRACE_S", "ToolRegistry", "default_registry", "registry_for", "truncate")

log = structlog.get_logger("warden.tools")

TIMEOUT_GRACE_S = 5.0
"""How much longer than the sandbox's ``timeout_s`` the registry lets a tool run."""


class ToolRegistry:
    """The tools by name; ``call`` runs one under the contract of the module docstring.

    Immutable once built; only ``call``, ``reconcile`` and ``simulate`` block.
    """

    def __init__(
        self,
        tools: Iterable[Tool],
        *,
        max_output_bytes: int = MAX_TOOL_OUTPUT_BYTES,
        timeout_grace_s: float = TIMEOUT_GRACE_S,
    ) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if tool.name in self._tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self._tools[tool.name] = tool
        self._declarations = {name: ToolDeclaration.of(t) for name, t in self._tools.items()}
        self.max_output_bytes = max_output_bytes
        self.timeout_grace_s = timeout_grace_s

    def names(self) -> list[str]:
        """The names of the tools, sorted."""
        return sorted(self._tools)

    def get(self, name: str) -> Tool:
        """The tool called ``name``; raises ``KeyError``."""
        return self._tools[name]

    def declaration(self, name: str) -> ToolDeclaration:
        """The declarations of tool ``name``, as the parent must treat its calls.

        Pure and non-blocking. Raises ``UnknownToolError`` (naming the tools it holds) if
        the registry has no tool of that name.
        """
        try:
            return self._declarations[name]
        except KeyError:
            raise UnknownToolError(name, known=self.names()) from None

    def specs(self, allowlist: Sequence[str]) -> list[ToolSpec]:
        """The specs of the allowlisted tools, in allowlist order.

        Raises ``ValueError`` if the allowlist names a tool the registry lacks: a
        configuration mistake, caught when a worker starts rather than when a model asks.
        """
        missing = [name for name in allowlist if name not in self._tools]
        if missing:
            raise ValueError(f"allowlist names unknown tools {missing!r}; known: {self.names()!r}")
        return [self._tools[name].spec() for name in allowlist]

    async def reconcile(
        self, name: str, arguments: Mapping[str, object], ctx: ToolContext
    ) -> ToolCallRecord | None:
        """Ask tool ``name`` whether its interrupted call acted: the record of that call,
        or ``None`` if it had not. Raises ``ToolError`` when the tool cannot tell."""
        tool = self._tools.get(name)
        if tool is None or not tool.reconciles:
            raise ToolError(name, "cannot be reconciled")
        started = anyio.current_time()
        output = await tool.reconcile(arguments, ctx)
        if output is None:
            return None
        return ToolCallRecord(
            name=name, arguments=dict(arguments), ok=True, output=output,
            duration_ms=(anyio.current_time() - started) * 1000.0,
        )  # fmt: skip

    async def simulate(
        self, name: str, arguments: Mapping[str, object], ctx: ToolContext, *,
        allowlist: Sequence[str],
    ) -> ToolCallRecord:
        """What tool ``name`` says the call would return, without acting (a dry run): its
        ``simulate`` hook, under ``call``'s deadline; a ``ToolError`` (also: not in the
        allowlist, no such tool, no hook) is ``ok=False``. The output is truncated like
        a call's. A cancellation point."""
        started = anyio.current_time()
        tool = self._tools.get(name)
        hook = getattr(tool, "simulate", None) if tool is not None and tool.simulates \
            else None
        output, ok = f"tool {name!r} cannot simulate a call", False
        if name not in allowlist:
            output = str(ToolNotAllowedError(name, ctx.role))
        elif hook is not None:
            own = self._declarations[name].timeout_s
            timeout_s = (ctx.sandbox.timeout_s if own is None else own) + self.timeout_grace_s
            with anyio.move_on_after(timeout_s) as deadline:
                try:
                    answer = await hook(arguments, ctx)
                    output, ok = truncate(str(answer), self.max_output_bytes), True
                except ToolError as exc:
                    output = str(exc)
            if deadline.cancelled_caught:
                output = f"tool {name!r}: its simulation did not finish within {timeout_s:g} s"
        return ToolCallRecord(
            name=name, arguments=dict(arguments), ok=ok, output=output,
            duration_ms=(anyio.current_time() - started) * 1000.0,
        )  # fmt: skip

    async def call(
        self,
        name: str,
        arguments: Mapping[str, object],
        ctx: ToolContext,
        *,
        allowlist: Sequence[str],
    ) -> ToolCallRecord:
        """Run tool ``name`` and record how it went; a cancellation point.

        Never raises ``ToolError`` (it becomes ``ok=False``, and a ``ToolTimeoutError``
        also ``timed_out=True``); raises whatever else the tool raised, and ``TypeError``
        if the tool returned something other than a ``str``.
        """
        started = anyio.current_time()
        timed_out = False
        try:
            output = await self._call(name, arguments, ctx, allowlist)
            ok = True
        except ToolError as exc:
            output, ok = str(exc), False
            timed_out = isinstance(exc, ToolTimeoutError)
        duration_ms = (anyio.current_time() - started) * 1000.0
        log.debug(
            "tool_called", tool=name, ok=ok, timed_out=timed_out, duration_ms=round(duration_ms, 3),
            run_id=ctx.run_id, step=ctx.step, call_index=ctx.call_index, role=ctx.role,
        )  # fmt: skip
        return ToolCallRecord(
            name=name, arguments=dict(arguments), ok=ok, output=output,
            duration_ms=duration_ms, timed_out=timed_out,
        )  # fmt: skip

    async def _call(
        self,
        name: str,
        arguments: Mapping[str, object],
        ctx: ToolContext,
        allowlist: Sequence[str],
    ) -> str:
        if name not in allowlist:
            raise ToolNotAllowedError(name, ctx.role)
        tool = self._tools.get(name)
        if tool is None:
            raise UnknownToolError(name, known=self.names())
        own = self._declarations[name].timeout_s
        timeout_s = (ctx.sandbox.timeout_s if own is None else own) + self.timeout_grace_s
        output: object = None
        with anyio.move_on_after(timeout_s) as deadline:
            output = await tool.invoke(arguments, ctx)
        if deadline.cancelled_caught:
            raise ToolTimeoutError(
                name, f"did not finish within {timeout_s:g} s", timeout_s=timeout_s,
                retryable=True,
            )  # fmt: skip
        if not isinstance(output, str):
            raise TypeError(f"tool {name!r} returned {type(output).__name__}, not str")
        return truncate(output, self.max_output_bytes)


def truncate(text: str, max_bytes: int) -> str:
    """``text`` cut to ``max_bytes`` of UTF-8, with a marker saying how much was cut."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    kept = data[:max_bytes].decode("utf-8", errors="ignore")
    return f"{kept}\n[... output truncated: {max_bytes} of {len(data)} bytes shown]"


def default_registry(*, max_output_bytes: int = MAX_TOOL_OUTPUT_BYTES) -> ToolRegistry:
    """The registry of the tools warden ships: ``list_files``, ``read_file``, ``grep``
    and ``write_file`` (``files.py``); ``run_python`` and ``run_tests``, the one check
    (``python.py``); ``ledger_append`` (``ledger.py``); ``echo`` (``echo.py``)."""
    tools: list[Tool] = [
        ListFiles(), ReadFile(), Grep(), WriteFile(), RunPython(), RunTests(), LedgerAppend(),
        Echo(),
    ]  # fmt: skip
    return ToolRegistry(tools, max_output_bytes=max_output_bytes)


def registry_for(tools: Mapping[str, ToolSettings], *,
                 max_output_bytes: int = MAX_TOOL_OUTPUT_BYTES,
                 mcp_tools: Iterable[Tool] = ()) -> ToolRegistry:
    """warden's tools (``default_registry``) and the user's function tools of ``tools``
    (the settings' ``[tools.*]``), their modules imported now, and ``mcp_tools`` (the
    tools of the MCP servers, ``mcp.py``'s ``open_mcp_servers``). Blocks on the imports;
    raises ``ConfigError`` naming ``tools.<name>.<key>`` (``function.py``)."""
    builtin = default_registry(max_output_bytes=max_output_bytes)
    reserved = frozenset(builtin.names())
    own = [load_function_tool(name, spec, reserved=reserved) for name, spec in tools.items()]
    return ToolRegistry([*(builtin.get(name) for name in builtin.names()), *own, *mcp_tools],
                        max_output_bytes=max_output_bytes)
