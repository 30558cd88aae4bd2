"""The tools a worker's model may call, and the registry that calls them.

A tool is a class with a ``name``, a ``description``, an ``Arguments`` msgspec Struct
(``forbid_unknown_fields=True``) and an async ``run``. The Struct's JSON schema, inlined
(no ``$ref``/``$defs``), is the tool's ``input_schema`` in the Messages API. Two
class-level declarations are for durability (replaying a run after a crash):
``side_effects`` (does it change the workspace or run code) and ``idempotent_by_key``
(is running it again with the same key, ``run_id``/``step``/``call_index``, the same as
running it once, so a replay may repeat it rather than need its journaled result).

``ToolRegistry.call`` is the one door, and its contract is:

- a tool not in the role's allowlist is refused (``ToolNotAllowedError``);
- the arguments are converted with ``msgspec.convert``; a mismatch is a
  ``ToolArgumentsError`` naming the field (missing, wrong type, unknown);
- the tool runs under a deadline (the sandbox timeout plus a grace period);
- a ``ToolError`` is an answer, not a crash: it becomes a ``ToolCallRecord`` with
  ``ok=False`` and the error's message as output, so the model can read it and correct
  itself; any other exception propagates (a crash, for the supervisor);
- the output must be a ``str`` (anything else is a defect in the tool: ``TypeError``,
  a crash) and is truncated to ``max_output_bytes`` with a marker.

The tools: ``list_files``, ``read_file``, ``grep`` (read only); ``write_file``;
``run_python`` and ``run_tests`` (run model-written code in ``actors/sandbox.py``);
``ledger_append`` (an externally checkable side effect, for proving exactly-once);
``echo`` (returns its text: a no-op for wiring checks and the benchmarks, in no role's
allowlist by default).
"""

from __future__ import annotations

import abc
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Generic, Protocol, TypeVar

import anyio
import msgspec
import structlog
from warden.actors.errors import SandboxError, ToolArgumentsError, ToolError, ToolNotAllowedError
from warden.actors.sandbox import SandboxResult, run_sandboxed
from warden.actors.workspace import MAX_READ_BYTES, MAX_WRITE_BYTES, Workspace
from warden.bus.wire import ToolCallRecord, ToolSpec
from warden.config.settings import SandboxSettings

log = structlog.get_logger("warden.tools")

MAX_TOOL_OUTPUT_BYTES = 32 * 1024
"""Default bound of what one tool call returns to the model."""
TIMEOUT_GRACE_S = 5.0
"""How much longer than the sandbox's ``timeout_s`` the registry lets a tool run."""
MAX_CODE_CHARS = 100_000
MAX_GREP_MATCHES = 200
MAX_GREP_FILES = 2000
MAX_GREP_LINE_CHARS = 300

ArgsT = TypeVar("ArgsT", bound=msgspec.Struct)


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
    def spec(self) -> ToolSpec: ...
    async def invoke(self, arguments: Mapping[str, object], ctx: ToolContext) -> object: ...
    async def reconcile(self, arguments: Mapping[str, object], ctx: ToolContext) -> str | None:
        ...


class ToolBase(abc.ABC, Generic[ArgsT]):
    """A tool whose arguments are the Struct ``Arguments``. Subclasses implement ``run``."""

    name: ClassVar[str]
    description: ClassVar[str]
    side_effects: ClassVar[bool] = False
    idempotent_by_key: ClassVar[bool] = True
    reconciles: ClassVar[bool] = False
    """Whether ``reconcile`` can tell if an interrupted call already acted."""
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

    @abc.abstractmethod
    async def run(self, args: ArgsT, ctx: ToolContext) -> str:
        """Do the work; a cancellation point. Raises ``ToolError`` for what the model
        can correct; anything else is a crash."""


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


class ToolRegistry:
    """The tools by name; ``call`` runs one under the contract of the module docstring."""

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
        self.max_output_bytes = max_output_bytes
        self.timeout_grace_s = timeout_grace_s

    def names(self) -> list[str]:
        return sorted(self._tools)

    def get(self, name: str) -> Tool:
        """The tool called ``name``; raises ``KeyError``."""
        return self._tools[name]

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
        )

    def specs(self, allowlist: Sequence[str]) -> list[ToolSpec]:
        """The specs of the allowlisted tools, in allowlist order.

        Raises ``ValueError`` if the allowlist names a tool the registry lacks: a
        configuration mistake, caught when a worker starts rather than when a model asks.
        """
        missing = [name for name in allowlist if name not in self._tools]
        if missing:
            raise ValueError(f"allowlist names unknown tools {missing!r}; known: {self.names()!r}")
        return [self._tools[name].spec() for name in allowlist]

    async def call(
        self,
        name: str,
        arguments: Mapping[str, object],
        ctx: ToolContext,
        *,
        allowlist: Sequence[str],
    ) -> ToolCallRecord:
        """Run tool ``name`` and record how it went; a cancellation point.

        Never raises ``ToolError`` (it becomes ``ok=False``); raises whatever else the tool
        raised, and ``TypeError`` if the tool returned something other than a ``str``.
        """
        started = anyio.current_time()
        try:
            output = await self._call(name, arguments, ctx, allowlist)
            ok = True
        except ToolError as exc:
            output, ok = str(exc), False
        duration_ms = (anyio.current_time() - started) * 1000.0
        log.debug(
            "tool_called", tool=name, ok=ok, duration_ms=round(duration_ms, 3),
            run_id=ctx.run_id, step=ctx.step, call_index=ctx.call_index, role=ctx.role,
        )  # fmt: skip
        return ToolCallRecord(
            name=name, arguments=dict(arguments), ok=ok, output=output, duration_ms=duration_ms
        )

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
            raise ToolError(name, f"no such tool; known: {self.names()!r}")
        timeout_s = ctx.sandbox.timeout_s + self.timeout_grace_s
        output: object = None
        with anyio.move_on_after(timeout_s) as deadline:
            output = await tool.invoke(arguments, ctx)
        if deadline.cancelled_caught:
            raise ToolError(name, f"did not finish within {timeout_s:g} s", retryable=True)
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


# -- the tools ------------------------------------------------------------------------

_Path = Annotated[str, msgspec.Meta(description="A path relative to the workspace root.")]


class EchoArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Arguments of echo."""

    text: Annotated[str, msgspec.Meta(max_length=MAX_TOOL_OUTPUT_BYTES)]


class Echo(ToolBase[EchoArgs]):
    name = "echo"
    description = "Return the given text unchanged."
    Arguments = EchoArgs

    async def run(self, args: EchoArgs, ctx: ToolContext) -> str:
        return args.text


class ListFilesArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Arguments of list_files."""

    path: _Path = "."


class ListFiles(ToolBase[ListFilesArgs]):
    name = "list_files"
    description = (
        "List the files under a directory of the workspace, recursively. "
        "Directories end in '/', symlinks in '@'."
    )
    Arguments = ListFilesArgs

    async def run(self, args: ListFilesArgs, ctx: ToolContext) -> str:
        listing = await anyio.to_thread.run_sync(
            lambda: ctx.workspace.listing(args.path, tool=self.name)
        )
        if not listing.entries:
            return "(empty directory)"
        lines = list(listing.entries)
        if listing.truncated:
            lines.append(f"[... listing truncated after {len(lines)} entries]")
        return "\n".join(lines)


class ReadFileArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Arguments of read_file."""

    path: _Path
    max_bytes: Annotated[
        int, msgspec.Meta(ge=1, le=MAX_READ_BYTES, description="Read at most this many bytes.")
    ] = 64 * 1024


class ReadFile(ToolBase[ReadFileArgs]):
    name = "read_file"
    description = "Read a text file of the workspace (UTF-8), up to max_bytes."
    Arguments = ReadFileArgs

    async def run(self, args: ReadFileArgs, ctx: ToolContext) -> str:
        read = await anyio.to_thread.run_sync(
            lambda: ctx.workspace.read(args.path, tool=self.name, max_bytes=args.max_bytes)
        )
        if read.truncated:
            return f"{read.text}\n[... truncated: {len(read.data)} of {read.size} bytes shown]"
        return read.text


class WriteFileArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Arguments of write_file."""

    path: _Path
    content: Annotated[str, msgspec.Meta(description="The whole new content of the file.")]


class WriteFile(ToolBase[WriteFileArgs]):
    name = "write_file"
    description = (
        "Create or replace a file of the workspace with the given content, creating its "
        f"directories. At most {MAX_WRITE_BYTES} bytes."
    )
    side_effects = True
    idempotent_by_key = True  # the same content written twice is the same file
    Arguments = WriteFileArgs

    async def run(self, args: WriteFileArgs, ctx: ToolContext) -> str:
        data = args.content.encode("utf-8")
        size = await anyio.to_thread.run_sync(
            lambda: ctx.workspace.write(args.path, data, tool=self.name)
        )
        return f"wrote {size} bytes to {args.path}"


class GrepArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Arguments of grep."""

    pattern: Annotated[str, msgspec.Meta(min_length=1, description="A Python regular expression.")]
    path: _Path = "."


_GREP = """\
import json, os, re, sys
job = json.load(sys.stdin)
rx = re.compile(job["pattern"])
found = 0
for path in job["files"]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        continue
    with os.fdopen(fd, "rb") as file:
        data = file.read(job["max_file_bytes"])
    if b"\\0" in data[:8192]:
        continue
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if rx.search(line):
            found += 1
            if found > job["max_matches"]:
                print(f"[... more matches; the first {job['max_matches']} are shown]")
                sys.exit(0)
            print(f"{path}:{number}: {line[:job['max_line']]}")
"""
"""The matching runs in the sandbox: ``re`` holds the GIL, so a catastrophic pattern run
here would stall the event loop; there the timeout kills it."""


class Grep(ToolBase[GrepArgs]):
    name = "grep"
    description = (
        "Search the workspace's text files for a Python regular expression; prints "
        "path:line: text for each matching line."
    )
    Arguments = GrepArgs

    async def run(self, args: GrepArgs, ctx: ToolContext) -> str:
        try:
            re.compile(args.pattern)
        except re.error as exc:
            raise ToolArgumentsError(
                self.name, f"pattern {args.pattern!r} is not a valid regular expression: {exc}"
            ) from None
        files = await anyio.to_thread.run_sync(
            lambda: ctx.workspace.files(args.path, tool=self.name, max_files=MAX_GREP_FILES)
        )
        if not files:
            return "(no matches)"
        job = {
            "pattern": args.pattern,
            "files": files,
            "max_matches": MAX_GREP_MATCHES,
            "max_line": MAX_GREP_LINE_CHARS,
            "max_file_bytes": MAX_READ_BYTES,
        }
        result = await run_sandboxed(
            [sys.executable, "-I", "-S", "-c", _GREP],
            cwd=ctx.workspace.root,
            settings=ctx.sandbox,
            stdin=json.dumps(job).encode("utf-8"),
        )
        if result.timed_out or result.exit_code != 0:
            raise SandboxError(self.name, f"search for {args.pattern!r} failed: {_ending(result)}")
        return result.stdout.rstrip("\n") or "(no matches)"


class RunPythonArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Arguments of run_python: exactly one of ``path`` and ``code``."""

    path: (
        Annotated[str, msgspec.Meta(description="A Python file of the workspace to run.")] | None
    ) = None
    code: (
        Annotated[
            str,
            msgspec.Meta(max_length=MAX_CODE_CHARS, description="Python source to run instead."),
        ]
        | None
    ) = None
    args: Annotated[
        list[str], msgspec.Meta(max_length=64, description="Command-line arguments.")
    ] = []


class RunPython(ToolBase[RunPythonArgs]):
    name = "run_python"
    description = (
        "Run a Python file of the workspace (path) or a snippet (code) in a sandbox, with "
        "the workspace as working directory; returns the exit code, stdout and stderr."
    )
    side_effects = True
    idempotent_by_key = False  # arbitrary code: running it twice may differ from once
    Arguments = RunPythonArgs

    async def run(self, args: RunPythonArgs, ctx: ToolContext) -> str:
        if (args.path is None) == (args.code is None):
            raise ToolArgumentsError(self.name, "give exactly one of `path` and `code`")
        stdin: bytes | None = None
        if args.path is not None:
            script = ctx.workspace.resolve(args.path, tool=self.name)
            if not await anyio.Path(script).is_file():
                raise ToolError(self.name, f"path {args.path!r} is not a file")
            argv = [sys.executable, ctx.workspace.relative(script), *args.args]
        else:
            argv = [sys.executable, "-", *args.args]
            stdin = (args.code or "").encode("utf-8")
        result = await run_sandboxed(
            argv, cwd=ctx.workspace.root, settings=ctx.sandbox, stdin=stdin
        )
        if result.timed_out or result.killed_by_signal is not None:
            raise SandboxError(self.name, f"{_ending(result)}\n{_report(result)}")
        return _report(result)


class RunTestsArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Arguments of run_tests."""

    path: _Path = "."


_PYTEST_CONFIGS = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


class RunTests(ToolBase[RunTestsArgs]):
    name = "run_tests"
    description = (
        "Run the workspace's pytest tests under path in a sandbox. The first line of the "
        "answer is PASS or FAIL; then the exit code and pytest's output."
    )
    # It runs model-written tests, which may do anything: declared like run_python.
    side_effects = True
    idempotent_by_key = False
    Arguments = RunTestsArgs

    async def run(self, args: RunTestsArgs, ctx: ToolContext) -> str:
        target = ctx.workspace.resolve(args.path, tool=self.name)
        if not await anyio.Path(target).exists():
            raise ToolError(self.name, f"path {args.path!r} does not exist")
        root = ctx.workspace.root
        # Confine pytest's rootdir and conftest search to the workspace; without a config
        # of its own, an empty one, or pytest would walk up and find ours.
        isolate = ["--rootdir=.", "--confcutdir=."]
        if not [name for name in _PYTEST_CONFIGS if await anyio.Path(root / name).exists()]:
            isolate += ["-c", os.devnull]
        argv = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *isolate,
            ctx.workspace.relative(target) or ".",
        ]  # fmt: skip
        result = await run_sandboxed(argv, cwd=root, settings=ctx.sandbox)
        if result.timed_out or result.killed_by_signal is not None:
            raise SandboxError(self.name, f"FAIL: {_ending(result)}\n{_report(result)}")
        verdict = "PASS" if result.exit_code == 0 else "FAIL"
        return f"{verdict}\n{_report(result)}"


def _ending(result: SandboxResult) -> str:
    """How the process ended, in words."""
    if result.timed_out:
        return f"timed out after {result.duration_s:.1f} s and was killed"
    if result.killed_by_signal is not None:
        return f"killed by {result.signal_name} (a resource limit, or a crash)"
    return f"exited with code {result.exit_code}: {result.stderr.strip()[-500:]}"


def _report(result: SandboxResult) -> str:
    """Exit code, then stdout and stderr under headings when not empty."""
    parts = [f"exit code: {result.exit_code}"]
    if result.stdout:
        parts.append(f"--- stdout ---\n{result.stdout.rstrip()}")
    if result.stderr:
        parts.append(f"--- stderr ---\n{result.stderr.rstrip()}")
    return "\n".join(parts)


class LedgerAppendArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Arguments of ledger_append."""

    text: Annotated[str, msgspec.Meta(max_length=1000)]


class LedgerAppend(ToolBase[LedgerAppendArgs]):
    """Appends ``<idempotency key> <run id> <text>`` to ``ledger.txt`` in the data directory.

    A side effect anyone can check from outside: after any crash, every key in the file is
    unique and every succeeded ``ledger`` run has exactly its three lines. Not idempotent
    by key (a second append is a second line), but it reconciles: an interrupted call
    acted if and only if its key is in the file.
    """

    name = "ledger_append"
    description = "Append one line of text to the shared ledger (ledger.txt)."
    side_effects = True
    idempotent_by_key = False
    reconciles = True
    Arguments = LedgerAppendArgs

    @staticmethod
    def _path(ctx: ToolContext) -> Path:
        if ctx.data_dir is None or not ctx.idempotency_key:
            raise ToolError("ledger_append", "needs a data directory and an idempotency key")
        return ctx.data_dir / "ledger.txt"

    async def run(self, args: LedgerAppendArgs, ctx: ToolContext) -> str:
        path = self._path(ctx)
        text = " ".join(args.text.split())  # one line, whatever the model sent
        line = f"{ctx.idempotency_key} {ctx.run_id} {text}\n".encode()

        def append() -> None:
            # One write(2) on an O_APPEND descriptor: concurrent appends never interleave,
            # and fsync before the outcome is reported, so "acted" survives a power cut.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

        await anyio.to_thread.run_sync(append)
        return f"appended to ledger.txt as {ctx.idempotency_key}"

    async def reconcile(self, arguments: Mapping[str, object], ctx: ToolContext) -> str | None:
        path = self._path(ctx)
        prefix = f"{ctx.idempotency_key} ".encode()

        def find() -> bool:
            try:
                with path.open("rb") as ledger:
                    return any(line.startswith(prefix) for line in ledger)
            except FileNotFoundError:
                return False

        found = await anyio.to_thread.run_sync(find)
        return f"appended to ledger.txt as {ctx.idempotency_key}" if found else None


def default_registry(*, max_output_bytes: int = MAX_TOOL_OUTPUT_BYTES) -> ToolRegistry:
    """The registry of the tools warden ships."""
    tools: list[Tool] = [
        ListFiles(), ReadFile(), Grep(), WriteFile(), RunPython(), RunTests(), LedgerAppend(),
        Echo(),
    ]
    return ToolRegistry(tools, max_output_bytes=max_output_bytes)
