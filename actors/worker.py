"""The worker actors: research, code and review.

A worker serves one role's subject (``warden.work.<role>``) in the queue group
``workers``, so workers in the daemon and in other processes (``warden worker --role``)
share the load. It answers two requests, both sent by a run supervisor:

- ``TurnRequest``: ONE model call with the role's prompt, model and tool specs (from the
  worker's config), answered with a ``TurnReply`` (the model's message and its usage).
- ``ToolRequest``: ONE tool call with the parent's idempotency key, refused unless the
  tool is in the role's allowlist, answered with a ``ToolReply``; or, in ``reconcile``
  mode, whether an interrupted call with that key already acted.

It never loops on its own: the parent owns the step's loop, journals every call and
decides whether another follows, so the step cap and exactly-once are the parent's.
A model error is an answer (``TurnReply.error``, with ``retryable``); any other
exception is a crash: the worker replies with the error (so the parent need not wait
out its deadline) and lets it escape, and its supervisor restarts it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import msgspec
import structlog
from warden.actors.actor import Actor
from warden.actors.errors import ModelError, ToolError
from warden.actors.model import Model, ModelRequest
from warden.actors.tools import ToolContext, ToolRegistry
from warden.actors.workspace import Workspace
from warden.bus import subjects
from warden.bus.connection import Bus, Envelope
from warden.bus.wire import (
    Message,
    ToolReply,
    ToolRequest,
    TurnReply,
    TurnRequest,
    encoder,
    work_request_decoder,
)
from warden.config import RoleSettings, SandboxSettings
from warden.config.crashpoints import crash_point

log = structlog.get_logger("warden.worker")


@functools.lru_cache(maxsize=4096)
def _workspace(path: str) -> Workspace:
    """The workspace at ``path``, resolved once per run rather than per tool call (it
    walks the path with lstat, on the event loop)."""
    return Workspace(Path(path))


class Worker(Actor):
    """One role's worker pool: serves ``warden.work.<role>`` with a model and tools."""

    def __init__(
        self,
        bus: Bus,
        role: str,
        settings: RoleSettings,
        model: Model,
        tools: ToolRegistry,
        sandbox: SandboxSettings,
        *,
        data_dir: Path | None = None,
    ) -> None:
        super().__init__(
            bus, subjects.work(role), queue=subjects.WORK_QUEUE_GROUP,
            concurrency=settings.concurrency,
        )
        self.role = role
        self.settings = settings
        self.model = model
        self.tools = tools
        self.sandbox = sandbox
        self.data_dir = data_dir
        self._specs = tools.specs(settings.tools)

    @property
    def name(self) -> str:
        return f"worker.{self.role}"

    async def handle(self, envelope: Envelope) -> None:
        try:
            request = work_request_decoder.decode(envelope.data)
        except msgspec.DecodeError as exc:
            log.warning("bad_work_request", role=self.role, error=str(exc))
            reply = TurnReply(run_id="?", step=-1, turn=-1, error=f"bad turn request: {exc}")
            await self.bus.respond(envelope, encoder.encode(reply))
            return
        try:
            match request:
                case TurnRequest():
                    answer: TurnReply | ToolReply = await self.take_turn(request)
                case ToolRequest():
                    answer = await self.call_tool(request)
        except Exception as exc:
            error = f"worker {self.role!r} crashed: {exc!r}"
            crash: TurnReply | ToolReply = (
                TurnReply(run_id=request.run_id, step=request.step, turn=request.turn,
                          error=error, retryable=True)
                if isinstance(request, TurnRequest)
                else ToolReply(run_id=request.run_id, idempotency_key=request.idempotency_key,
                               error=error)
            )
            await self.bus.respond(envelope, encoder.encode(crash))
            raise
        await self.bus.respond(envelope, encoder.encode(answer))

    async def take_turn(self, request: TurnRequest) -> TurnReply:
        """One model call. Raises only on a crash."""
        call = ModelRequest(
            model=self.settings.model,
            system=self.settings.prompt,
            messages=request.messages,
            max_tokens=request.max_tokens,
            tools=self._specs,
            purpose="step",
            role=self.role,
            scenario=request.scenario,
        )
        try:
            answer = await self.model.complete(call)
        except ModelError as exc:
            return TurnReply(
                run_id=request.run_id, step=request.step, turn=request.turn,
                error=str(exc), retryable=exc.retryable, model=self.settings.model,
            )
        return TurnReply(
            run_id=request.run_id,
            step=request.step,
            turn=request.turn,
            assistant=Message(role="assistant", content=answer.content),
            stop_reason=answer.stop_reason,
            usage=answer.usage,
            model=answer.model,
            latency_ms=answer.latency_ms,
        )

    async def call_tool(self, request: ToolRequest) -> ToolReply:
        """One tool call (or its reconciliation). Raises only on a crash."""
        ctx = ToolContext(
            workspace=_workspace(request.workspace), sandbox=self.sandbox, role=self.role,
            run_id=request.run_id, step=request.step, call_index=request.call_index,
            idempotency_key=request.idempotency_key, data_dir=self.data_dir,
        )
        key = request.idempotency_key
        if request.mode == "reconcile":
            try:
                record = await self.tools.reconcile(request.name, request.arguments, ctx)
            except ToolError as exc:
                return ToolReply(run_id=request.run_id, idempotency_key=key, error=str(exc))
            return ToolReply(run_id=request.run_id, idempotency_key=key, record=record)
        record = await self.tools.call(
            request.name, request.arguments, ctx, allowlist=self.settings.tools
        )
        crash_point("tool_acted")
        return ToolReply(run_id=request.run_id, idempotency_key=key, record=record)
