"""The workspace's files: ``list_files``, ``read_file``, ``grep`` (read only) and
``write_file``.

Every path is relative to the run's workspace and resolved by ``Workspace``, which
refuses one that leads outside it (``WorkspaceEscapeError``), symlinks included. File
system calls run in a worker thread; ``grep``'s matching runs in the sandbox.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated

import anyio
import msgspec
from warden.actors.errors import SandboxError, ToolArgumentsError, ToolTimeoutError
from warden.actors.sandbox import run_sandboxed
from warden.actors.tools.base import ToolBase, ToolContext, WorkspacePath
from warden.actors.workspace import MAX_READ_BYTES, MAX_WRITE_BYTES

__all__ = (
    "Grep",
    "GrepArgs",
    "ListFiles",
    "ListFilesArgs",
    "ReadFile",
    "ReadFileArgs",
    "WriteFile",
    "WriteFileArgs",
)

MAX_GREP_MATCHES = 200
MAX_GREP_FILES = 2000
MAX_GREP_LINE_CHARS = 300


class ListFilesArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Arguments of list_files."""

    path: WorkspacePath = "."


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

    path: WorkspacePath
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

    path: WorkspacePath
    content: Annotated[str, msgspec.Meta(description="The whole new content of the file.")]


class WriteFile(ToolBase[WriteFileArgs]):
    name = "write_file"
    description = (
        "Create or replace a file of the workspace with the given content, creating its "
        f"directories. At most {MAX_WRITE_BYTES} bytes."
    )
    side_effects = True
    risk = "medium"  # README, "Approvals": what runs without a human is the role's auto_approve
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
    path: WorkspacePath = "."


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
        failed = f"search for {args.pattern!r} failed: {result.ending}"
        if result.timed_out:
            raise ToolTimeoutError(self.name, failed, timeout_s=ctx.sandbox.timeout_s)
        if result.exit_code != 0:
            raise SandboxError(self.name, failed)
        return result.stdout.rstrip("\n") or "(no matches)"
