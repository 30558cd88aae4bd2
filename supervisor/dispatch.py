"""Dispatchers: how the call gate hands a call to whoever executes it.

``Dispatcher`` is the seam between the run logic and the transport. Two implementations:

- ``NatsDispatcher``: a step's model call and every tool call is a NATS request to the
  role's queue group (``warden.work.<role>``); the plan and synthesis calls are made by
  the daemon's own model in-process, through the same ``execute_turn`` a worker runs.
- ``InMemoryDispatcher``: everything in-process, through ``execute_turn`` and
  ``execute_tool`` — the unit tests of the run logic run on it, with no nats-server.

Both are cancellation points. A dispatcher raises ``DispatchError`` when the call could
not be handed over or answered (no worker, a lost connection, no reply in time, a reply
that does not decode): ``maybe_delivered`` says whether a worker may have acted on it,
``connection_lost`` whether the transport rather than a worker is at fault. Any other
answer — including a worker's or a model's error — comes back as the reply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypeVar

import msgspec
from warden.actors import tracing
from warden.actors.model import Model
from warden.actors.tools import ToolRegistry
from warden.actors.worker import WORKSPACES, execute_tool, execute_turn
from warden.bus import subjects
from warden.bus.connection import Bus
from warden.bus.errors import BusConnectionError, BusError, NoRespondersError
from warden.bus.wire import (
    ToolReply,
    ToolRequest,
    TurnReply,
    TurnRequest,
    encoder,
    tool_reply_decoder,
    turn_reply_decoder,
)
from warden.config import Settings

__all__ = ("DispatchError", "Dispatcher", "InMemoryDispatcher", "NatsDispatcher")

Reply = TypeVar("Reply", TurnReply, ToolReply)


class DispatchError(Exception):
    """A call could not be handed to an executor or got no usable answer.

    Internal to the gate and its dispatchers (the gate turns it into a
    ``WorkerUnreachableError`` or waits it out), hence not in supervisor/errors.py.
    """

    def __init__(self, problem: str, *, maybe_delivered: bool, connection_lost: bool) -> None:
        self.problem = problem
        self.maybe_delivered = maybe_delivered
        self.connection_lost = connection_lost
        super().__init__(problem)


class Dispatcher(Protocol):
    """Executes one call exactly as built; never decides policy."""

    async def model(self, request: TurnRequest, *, wait_s: float) -> TurnReply:
        """One model call; ``wait_s`` bounds the wait for its reply."""
        ...

    async def tool(self, request: ToolRequest, *, wait_s: float) -> ToolReply:
        """One tool call (or its reconciliation); ``wait_s`` bounds the wait."""
        ...


class NatsDispatcher:
    """Step turns and tool calls over NATS to the role's workers; plan and synthesis calls
    in-process with the daemon's model."""

    def __init__(self, bus: Bus, model: Model, *, timeout_s: float) -> None:
        self._bus = bus
        self._model = model
        self._timeout_s = timeout_s
        self._subjects: dict[str, str] = {}
        """Each role's work subject, checked and built once."""

    async def model(self, request: TurnRequest, *, wait_s: float) -> TurnReply:
        if request.purpose != "step":
            return await execute_turn(self._model, request, timeout_s=self._timeout_s)
        return await self._request(request.role, request, turn_reply_decoder, wait_s)

    async def tool(self, request: ToolRequest, *, wait_s: float) -> ToolReply:
        return await self._request(request.role, request, tool_reply_decoder, wait_s)

    async def _request(
        self, role: str, payload: TurnRequest | ToolRequest,
        decoder: msgspec.json.Decoder[Reply], wait_s: float,
    ) -> Reply:
        subject = self._subjects.get(role)
        if subject is None:
            subject = self._subjects[role] = subjects.work(role)
        traces = tracing.tracer()
        # With tracing on, the worker's spans join the current one (W3C traceparent).
        headers = None if traces is None else traces.headers()
        try:
            raw = await self._bus.request(subject, encoder.encode(payload), timeout=wait_s,
                                          headers=headers)
            return decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise DispatchError(f"undecodable reply: {exc}", maybe_delivered=True,
                                connection_lost=False) from exc
        except BusError as exc:
            raise DispatchError(
                str(exc), maybe_delivered=not isinstance(exc, NoRespondersError),
                connection_lost=isinstance(exc, BusConnectionError),
            ) from exc


class InMemoryDispatcher:
    """Every call in-process: the model and the tools called directly, as a worker would.

    For unit tests of the run logic. Tools run in ``<data_dir>/workspaces/<run_id>`` under
    the role's allowlist from ``settings``, exactly as ``Worker`` runs them.
    """

    def __init__(
        self, settings: Settings, model: Model, tools: ToolRegistry, *, data_dir: Path
    ) -> None:
        self._settings = settings
        self._model = model
        self._tools = tools
        self._data_dir = data_dir
        self._workspaces = (data_dir / WORKSPACES).resolve()

    async def model(self, request: TurnRequest, *, wait_s: float) -> TurnReply:
        return await execute_turn(self._model, request,
                                  timeout_s=self._settings.models.timeout_s)

    async def tool(self, request: ToolRequest, *, wait_s: float) -> ToolReply:
        role = self._settings.roles.get(request.role)
        return await execute_tool(
            self._tools, request, allowlist=role.tools if role else [],
            workspaces=self._workspaces, sandbox=self._settings.sandbox,
            data_dir=self._data_dir, network=role.network if role else False,
        )
