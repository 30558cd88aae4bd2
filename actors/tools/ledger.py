"""``ledger_append``: an externally checkable side effect, for proving exactly-once.

It appends ``<idempotency key> <run id> <text>`` to ``ledger.txt`` in the worker's data
directory. After any crash, every key in the file is unique and every succeeded
``ledger`` run has exactly its three lines (the chaos tests count them).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import anyio
import msgspec
from warden.actors.errors import ToolError
from warden.actors.tools.base import ToolBase, ToolContext

__all__ = ("LedgerAppend", "LedgerAppendArgs")


class LedgerAppendArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Arguments of ledger_append."""

    text: Annotated[str, msgspec.Meta(max_length=1000)]


class LedgerAppend(ToolBase[LedgerAppendArgs]):
    """Appends ``<idempotency key> <run id> <text>`` to ``ledger.txt`` in the data directory.

    Not idempotent by key (a second append is a second line), but it reconciles: an
    interrupted call acted if and only if its key is in the file. A dry run reads the
    line it would append (``simulate``), and the file is not touched.
    """

    name = "ledger_append"
    description = "Append one line of text to the shared ledger (ledger.txt)."
    side_effects = True
    risk = "medium"  # README, "Approvals": what runs without a human is the role's auto_approve
    idempotent_by_key = False
    reconciles = True
    simulates = True
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

    async def simulate(self, arguments: Mapping[str, object], ctx: ToolContext) -> str:
        args = self.parse(arguments)
        self._path(ctx)  # what a real call needs, it needs too: the same errors
        text = " ".join(args.text.split())
        return f"would append to ledger.txt as {ctx.idempotency_key}: {text!r}"

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
