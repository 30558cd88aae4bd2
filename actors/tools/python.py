"""Running model-written code: ``run_python`` and ``run_tests``, in ``actors/sandbox.py``.

Both are declared with side effects and not idempotent by key: the code may do
anything, and running it twice may differ from running it once. ``run_tests`` is the
one built-in check (``check = True``): a step whose tests failed or timed out cannot
succeed. A run that hit the sandbox's timeout is a ``ToolTimeoutError``, which the
registry records as ``ok=False, timed_out=True``; one killed by a signal (a resource
limit) is a ``SandboxError``.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import anyio
import msgspec
from warden.actors.errors import (
    CheckFailedError,
    SandboxError,
    ToolArgumentsError,
    ToolError,
    ToolTimeoutError,
)
from warden.actors.sandbox import SandboxResult, run_sandboxed
from warden.actors.tools.base import ToolBase, ToolContext, WorkspacePath

__all__ = ("MAX_CODE_CHARS", "RunPython", "RunPythonArgs", "RunTests", "RunTestsArgs")

MAX_CODE_CHARS = 100_000

_PYTEST_CONFIGS = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


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
    risk = "medium"  # README, "Approvals": what runs without a human is the role's auto_approve
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
            argv, cwd=ctx.workspace.root, settings=ctx.sandbox, stdin=stdin,
            network=ctx.network,
        )
        _raise_unless_exited(self.name, result, ctx, prefix="")
        return result.report


class RunTestsArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Arguments of run_tests."""

    path: WorkspacePath = "."


class RunTests(ToolBase[RunTestsArgs]):
    name = "run_tests"
    description = (
        "Run the workspace's pytest tests under path in a sandbox. The answer starts with "
        "PASS, or is an error whose text starts with FAIL; then the exit code and pytest's "
        "output."
    )
    # It runs model-written tests, which may do anything: declared like run_python.
    side_effects = True
    risk = "medium"  # README, "Approvals": what runs without a human is the role's auto_approve
    idempotent_by_key = False
    check = True  # it verifies the step's work
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
        result = await run_sandboxed(argv, cwd=root, settings=ctx.sandbox,
                                     network=ctx.network)
        _raise_unless_exited(self.name, result, ctx, prefix="FAIL: ")
        if result.exit_code != 0:  # a check's failing verdict is not ok: the step cannot pass
            raise CheckFailedError(self.name, f"FAIL\n{result.report}")
        return f"PASS\n{result.report}"


def _raise_unless_exited(
    tool: str, result: SandboxResult, ctx: ToolContext, *, prefix: str
) -> None:
    """Raise ``ToolTimeoutError`` if the run hit the sandbox's timeout, ``SandboxError``
    if a signal ended it; return if it exited (whatever its code: that is an answer)."""
    if result.timed_out:
        message = f"{prefix}{result.ending}\n{result.report}"
        raise ToolTimeoutError(tool, message, timeout_s=ctx.sandbox.timeout_s)
    if result.killed_by_signal is not None:
        raise SandboxError(tool, f"{prefix}{result.ending}\n{result.report}")
