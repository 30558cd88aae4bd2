"""``echo``: returns its text. A no-op for wiring checks and the benchmarks, in no role's
allowlist by default."""

from __future__ import annotations

from typing import Annotated

import msgspec
from warden.actors.tools.base import MAX_TOOL_OUTPUT_BYTES, ToolBase, ToolContext

__all__ = ("Echo", "EchoArgs")


class EchoArgs(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Arguments of echo."""

    text: Annotated[str, msgspec.Meta(max_length=MAX_TOOL_OUTPUT_BYTES)]


class Echo(ToolBase[EchoArgs]):
    name = "echo"
    description = "Return the given text unchanged."
    Arguments = EchoArgs

    async def run(self, args: EchoArgs, ctx: ToolContext) -> str:
        return args.text
