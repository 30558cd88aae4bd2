"""The one protocol every model client follows, and what goes in and out of it.

Two clients implement it: ``AnthropicModel`` (the Messages API through the official SDK)
and ``ScriptedModel`` (deterministic and offline). The run supervisor and the workers see
only ``Model``. Which client serves is ``build_model``'s choice, in ``model_factory.py``:
the clients import this module, so this module imports none of them.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec
from warden.bus.wire import Block, Message, TextBlock, ToolSpec, Usage

__all__ = ("Model", "ModelReply", "ModelRequest", "Purpose")

Purpose = Literal["plan", "step", "synthesize"]


class ModelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One call of a model.

    ``purpose``, ``role`` and ``scenario`` are hints: a real model ignores them (its
    instructions are in ``system`` and ``messages``); the scripted model uses them to pick
    its next turn deterministically.
    """

    model: str
    system: str
    messages: list[Message]
    max_tokens: int
    tools: list[ToolSpec] = []
    purpose: Purpose = "step"
    role: str | None = None
    scenario: str | None = None
    deadline_s: float | None = None
    """Seconds the call may take, from when ``complete`` is called; ``None``: no bound
    beyond the client's own timeouts."""


class ModelReply(msgspec.Struct, frozen=True, kw_only=True):
    """What a model answered, with its usage as the provider reported it."""

    content: list[Block]
    stop_reason: str
    usage: Usage
    model: str
    latency_ms: float = 0.0

    @property
    def text(self) -> str:
        """The concatenated text blocks of the reply."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))


class Model(Protocol):
    """A model client.

    ``complete`` is a cancellation point and blocks for the model's latency. It raises
    ``ModelError`` (with ``retryable``) for anything the provider or the transport did
    wrong; it never returns a partial reply. It ends by the request's ``deadline_s``: a
    client that waits on I/O bounds that wait itself (it knows how to abandon it) and
    raises ``ModelDeadlineError``. The deadline lives here rather than around every call
    in the worker: a cancel scope per turn cost about 2 % of warden's CPU per task in
    ``bench/`` (and nothing to bound for a client that does no I/O).
    """

    async def complete(self, request: ModelRequest) -> ModelReply: ...

    async def aclose(self) -> None: ...

