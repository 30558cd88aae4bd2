"""The worker actors: research, code and review.

A worker serves one role's subject (``warden.work.<role>``) in the queue group
``workers``, so workers in the daemon and in other processes (``warden worker --role``)
share the load. Each message is one ``TurnRequest``: the worker adds its role's prompt,
model and tool allowlist (from config), makes ONE model call, runs the tools the model
asked for (refusing any outside the allowlist), and replies with a ``TurnReply``. It never
loops on its own: the run supervisor decides whether another turn follows, so the step
cap is enforced by the parent.

A model error is an answer (``TurnReply.error``, with ``retryable``); any other exception
is a crash: the worker replies with the error (so the parent need not wait out its
deadline) and lets it escape, and its supervisor restarts it.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import structlog

from actors.actor import Actor
from actors.errors import ModelError
from actors.model import Model, ModelRequest
from actors.tools import ToolContext, ToolRegistry
from actors.workspace import Workspace
from bus import subjects
from bus.connection import Bus, Envelope
from bus.wire import (
    Message,
    ToolResultBlock,
    ToolUseBlock,
    TurnReply,
    TurnRequest,
    encoder,
    turn_request_decoder,
)
from config import RoleSettings, SandboxSettings

log = structlog.get_logger("warden.worker")


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
        self._specs = tools.specs(settings.tools)

    @property
    def name(self) -> str:
        return f"worker.{self.role}"

    async def handle(self, envelope: Envelope) -> None:
        try:
            request = turn_request_decoder.decode(envelope.data)
        except msgspec.DecodeError as exc:
            log.warning("bad_turn_request", role=self.role, error=str(exc))
            reply = TurnReply(run_id="?", step=-1, turn=-1, error=f"bad turn request: {exc}")
            await self.bus.respond(envelope, encoder.encode(reply))
            return
        try:
            reply = await self.take_turn(request)
        except Exception as exc:
            crash = TurnReply(
                run_id=request.run_id, step=request.step, turn=request.turn,
                error=f"worker {self.role!r} crashed: {exc!r}", retryable=True,
            )
            await self.bus.respond(envelope, encoder.encode(crash))
            raise
        await self.bus.respond(envelope, encoder.encode(reply))

    async def take_turn(self, request: TurnRequest) -> TurnReply:
        """One model call and the tools it asked for. Raises only on a crash."""
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
        assistant = Message(role="assistant", content=answer.content)
        workspace = Workspace(Path(request.workspace))
        results: list[ToolResultBlock] = []
        records = []
        for index, block in enumerate(b for b in answer.content if isinstance(b, ToolUseBlock)):
            ctx = ToolContext(
                workspace=workspace, sandbox=self.sandbox, role=self.role,
                run_id=request.run_id, step=request.step, call_index=request.turn * 100 + index,
            )
            record = await self.tools.call(
                block.name, block.input, ctx, allowlist=self.settings.tools
            )
            records.append(record)
            results.append(
                ToolResultBlock(tool_use_id=block.id, content=record.output, is_error=not record.ok)
            )
        return TurnReply(
            run_id=request.run_id,
            step=request.step,
            turn=request.turn,
            assistant=assistant,
            tool_results=results,
            tool_calls=records,
            stop_reason=answer.stop_reason,
            usage=answer.usage,
            model=answer.model,
            latency_ms=answer.latency_ms,
        )
