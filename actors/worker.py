"""The worker actors: research, code and review, and what any worker executes.

A worker serves one role's subject (``warden.work.<role>``) in the queue group
``workers``, so workers in the daemon and in other processes (``warden worker --role``)
share the load. It answers two requests, both sent by a run supervisor's call gate:

- ``TurnRequest``: ONE model call, exactly as the parent built it (model, system prompt,
  tool specs, messages), cancelled at the request's deadline; answered with a
  ``TurnReply`` (the model's message and its usage, or the error with ``retryable`` and
  the provider's ``retry-after``).
- ``ToolRequest``: ONE tool call with the parent's idempotency key, refused unless the
  tool is in the role's allowlist, confined to the run's workspace under this worker's
  own root; answered with a ``ToolReply``; or, in ``reconcile`` mode, whether an
  interrupted call with that key already acted; or, in ``simulate`` mode (a dry run),
  what the call would return, without acting.

It trusts nothing on the wire: every request is first checked against the worker's own
config (``admission.py``: run id, role, purpose, model, system prompt, ``max_tokens``,
tools) and a refused one is answered with the reason and never executed. At start it
settles, once per process, how its sandbox is isolated (``isolation.py``) and logs it.

It never loops and never decides policy: the parent owns the step's loop, retries,
budgets and journal. ``execute_turn`` and ``execute_tool`` are what a worker does with a
request; the in-memory dispatcher of the run logic's tests calls the same two functions.
A model error is an answer; any other exception is a crash: the worker replies with the
error (so the parent need not wait out its deadline) and lets it escape, and its
supervisor restarts it.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from warden.actors import tracing
from warden.actors.actor import Actor
from warden.actors.admission import Refusal, refuse_tool, refuse_turn, step_turn
from warden.actors.errors import ModelDeadlineError, ModelError, ToolError
from warden.actors.isolation import ensure_private_dir, isolation_in_use, workspaces_root
from warden.actors.model import Model, ModelRequest
from warden.actors.tools import ToolContext, ToolRegistry
from warden.actors.workspace import Workspace
from warden.bus import subjects
from warden.bus.connection import Bus, Envelope
from warden.bus.wire import (
    Message,
    ToolReply,
    ToolRequest,
    ToolSpec,
    TurnReply,
    TurnRequest,
    encoder,
    tool_specs_decoder,
    work_request_decoder,
)
from warden.config import ModelSettings, RoleSettings, SandboxSettings
from warden.config.crashpoints import crash_point

if TYPE_CHECKING:
    from warden.actors.otel_tracing import RunTracer

log = structlog.get_logger("warden.worker")

WORKSPACES = "workspaces"
"""The folder of a worker's data directory that holds one workspace per run (elsewhere
under the ``uid`` isolation: ``isolation.workspaces_root``)."""


_KNOWN_WORKSPACES = 4096
_workspaces: OrderedDict[tuple[Path, str], Workspace] = OrderedDict()


def _make_workspace(root: Path, run_id: str) -> Workspace:
    path = root / run_id
    path.mkdir(parents=True, exist_ok=True)
    return Workspace(path)


async def _workspace(root: Path, run_id: str) -> Workspace:
    """The workspace of ``run_id`` under ``root``: created and resolved (a walk of the
    path with lstat, off the event loop) on the run's first tool call, then taken from a
    cache of the most recent runs' — a thread hop per tool call cost ~100 us of CPU."""
    key = (root, run_id)
    workspace = _workspaces.get(key)
    if workspace is None:
        workspace = await anyio.to_thread.run_sync(_make_workspace, root, run_id)
        _workspaces[key] = workspace
        if len(_workspaces) > _KNOWN_WORKSPACES:
            _workspaces.popitem(last=False)
    return workspace


@functools.lru_cache(maxsize=256)
def _tool_specs(encoded: bytes) -> list[ToolSpec]:
    """The tool specs of a request, decoded once per distinct set (a role's are the same
    on every turn; decoding their JSON schemas on each turn cost more than the rest of the
    request). The list is shared: callers must not change it."""
    return tool_specs_decoder.decode(encoded)


def execute_turn(
    model: Model, request: TurnRequest, *, timeout_s: float, tools: list[ToolSpec] | None = None,
) -> Coroutine[object, object, TurnReply]:
    """Make the one model call ``request`` describes; never raises a ``ModelError``.

    A cancellation point. The call ends by the request's ``deadline_s`` (or ``timeout_s``
    when the request sets none): the model client abandons its HTTP request there
    (``ModelDeadlineError``), and the reply says so (retryable). ``tools``: the request's
    tool specs when the caller has decoded them already. Raises only on a crash. With
    tracing on, the call is a ``chat`` span (``tracing.py``).

    A plain function returning the coroutine to await: with tracing off, no coroutine of
    its own wraps the call's (measured: the extra layers of execute_turn, execute_tool and
    Worker.handle cost ~0.6 % of warden's instructions per task).
    """
    traces = tracing.tracer()
    if traces is None:
        return _turn(model, request, timeout_s=timeout_s, tools=tools)
    return _traced_turn(traces, model, request, timeout_s=timeout_s, tools=tools)


async def _traced_turn(traces: RunTracer, model: Model, request: TurnRequest, *,
                       timeout_s: float, tools: list[ToolSpec] | None) -> TurnReply:
    with traces.chat_span(request, tracing.provider_of(model, request.model)) as span:
        reply = await _turn(model, request, timeout_s=timeout_s, tools=tools)
        traces.chat_ended(span, reply)
        return reply


async def _turn(
    model: Model, request: TurnRequest, *, timeout_s: float, tools: list[ToolSpec] | None,
) -> TurnReply:
    deadline = request.deadline_s or timeout_s
    call = ModelRequest(
        model=request.model, system=request.system, messages=request.messages,
        max_tokens=request.max_tokens,
        tools=_tool_specs(bytes(request.tools)) if tools is None else tools,
        purpose=request.purpose,
        role=request.role if request.purpose == "step" else None, scenario=request.scenario,
        deadline_s=deadline,
    )
    try:
        answer = await model.complete(call)
    except ModelError as exc:
        traces = tracing.tracer()
        if traces is not None:
            traces.failed(type(exc).__name__)
        if isinstance(exc, ModelDeadlineError):
            log.warning("model_call_deadline", run_id=request.run_id, model=request.model,
                        deadline_s=deadline)
        return TurnReply(
            run_id=request.run_id, step=request.step, turn=request.turn,
            error=str(exc), retryable=exc.retryable, model=request.model,
            retry_after_s=exc.retry_after, status=exc.status,
        )
    return TurnReply(
        run_id=request.run_id, step=request.step, turn=request.turn,
        assistant=Message(role="assistant", content=answer.content),
        stop_reason=answer.stop_reason, usage=answer.usage, model=answer.model,
        latency_ms=answer.latency_ms,
    )


def execute_tool(
    tools: ToolRegistry, request: ToolRequest, *, allowlist: list[str], workspaces: Path,
    sandbox: SandboxSettings, data_dir: Path | None, network: bool = False,
) -> Coroutine[object, object, ToolReply]:
    """Run (or reconcile, or simulate) the one tool call ``request`` describes, in the
    run's workspace under ``workspaces``. A tool's own failure is a record with
    ``ok=False``; a request the worker cannot serve (a bad run id) is a reply with
    ``error``. Raises only on a crash. With tracing on, the call is an ``execute_tool``
    span (``tracing.py``). Returns the coroutine to await, as ``execute_turn`` does."""
    call = _tool(tools, request, allowlist=allowlist, workspaces=workspaces,
                 sandbox=sandbox, data_dir=data_dir, network=network)
    traces = tracing.tracer()
    return call if traces is None else _traced_tool(traces, request, call)


async def _traced_tool(traces: RunTracer, request: ToolRequest,
                       call: Coroutine[object, object, ToolReply]) -> ToolReply:
    with traces.tool_span(request) as span:
        reply = await call
        traces.tool_ended(span, reply)
        return reply


async def _tool(
    tools: ToolRegistry, request: ToolRequest, *, allowlist: list[str], workspaces: Path,
    sandbox: SandboxSettings, data_dir: Path | None, network: bool,
) -> ToolReply:
    key = request.idempotency_key
    if not subjects.is_valid_id(request.run_id):
        return ToolReply(run_id=request.run_id, idempotency_key=key,
                         error=f"run id {request.run_id!r} is not a valid id")
    workspace = await _workspace(workspaces, request.run_id)
    ctx = ToolContext(
        workspace=workspace, sandbox=sandbox, role=request.role, run_id=request.run_id,
        step=request.step, call_index=request.call_index, idempotency_key=key,
        data_dir=data_dir, network=network,
    )
    if request.mode == "reconcile":
        try:
            record = await tools.reconcile(request.name, request.arguments, ctx)
        except ToolError as exc:
            return ToolReply(run_id=request.run_id, idempotency_key=key, error=str(exc))
        return ToolReply(run_id=request.run_id, idempotency_key=key, record=record)
    if request.mode == "simulate":
        simulated = await tools.simulate(request.name, request.arguments, ctx,
                                         allowlist=allowlist)
        return ToolReply(run_id=request.run_id, idempotency_key=key, record=simulated)
    record = await tools.call(request.name, request.arguments, ctx, allowlist=allowlist)
    crash_point("tool_acted")
    return ToolReply(run_id=request.run_id, idempotency_key=key, record=record)


class Worker(Actor):
    """One role's worker pool: serves ``warden.work.<role>`` with a model and tools.

    ``models`` is the config's model section: with the role's settings it says what a
    step turn of this role is (``admission.step_turn``), and nothing else is accepted.
    """

    def __init__(
        self,
        bus: Bus,
        role: str,
        settings: RoleSettings,
        model: Model,
        tools: ToolRegistry,
        sandbox: SandboxSettings,
        *,
        data_dir: Path,
        models: ModelSettings,
        timeout_s: float = 120.0,
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
        self.workspaces = (data_dir / WORKSPACES).resolve()
        self.timeout_s = timeout_s
        self.expected = step_turn(settings, models)

    @property
    def name(self) -> str:
        return f"worker.{self.role}"

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Settle the sandbox's isolation (logged once per process; raises
        ``SandboxUnavailableError`` if the configured one is not possible here) and the
        workspaces' root, then serve as ``Actor.run`` does."""
        isolation = await isolation_in_use(self.sandbox)
        await anyio.to_thread.run_sync(ensure_private_dir, self.data_dir)
        self.workspaces = await anyio.to_thread.run_sync(
            workspaces_root, self.data_dir, isolation)
        network = ("on" if self.settings.network
                   else "off" if isolation.isolates_network else "not enforced")
        log.info("worker_sandbox", role=self.role, sandbox=isolation.kind, network=network)
        await super().run(task_status=task_status)

    async def _refuse(self, envelope: Envelope, request: TurnRequest | ToolRequest,
                      refusal: Refusal) -> None:
        log.warning("work_request_refused", role=self.role, field=refusal.field,
                    problem=refusal.problem, run_id=request.run_id[:128])
        run_id = request.run_id[:128]  # a refused id may be anything, of any length
        answer: TurnReply | ToolReply = (
            TurnReply(run_id=run_id, step=request.step, turn=request.turn,
                      error=str(refusal), retryable=False)
            if isinstance(request, TurnRequest)
            else ToolReply(run_id=run_id, idempotency_key=request.idempotency_key[:256],
                           error=str(refusal))
        )
        await self.bus.respond(envelope, encoder.encode(answer))

    def handle(self, envelope: Envelope) -> Coroutine[object, object, None]:
        # A plain function (see execute_turn): with tracing off, _serve is the handler.
        traces = tracing.tracer()
        if traces is None or not envelope.headers:
            return self._serve(envelope)
        return self._traced(traces, envelope)

    async def _traced(self, traces: RunTracer, envelope: Envelope) -> None:
        with traces.remote(envelope.headers):  # the sender's span: this one's parent
            await self._serve(envelope)

    async def _serve(self, envelope: Envelope) -> None:
        try:
            request = work_request_decoder.decode(envelope.data)
        except msgspec.DecodeError as exc:
            log.warning("bad_work_request", role=self.role, error=str(exc))
            reply = TurnReply(run_id="?", step=-1, turn=-1, error=f"bad turn request: {exc}")
            await self.bus.respond(envelope, encoder.encode(reply))
            return
        allowlist = self.settings.tools
        try:
            match request:
                case TurnRequest():
                    try:
                        specs = _tool_specs(bytes(request.tools))
                    except msgspec.MsgspecError as exc:
                        refusal: Refusal | None = Refusal(
                            "tools", f"is not a JSON array of tool specs: {exc}")
                    else:
                        refusal = refuse_turn(request, role=self.role, expected=self.expected,
                                              tools=specs, allowlist=allowlist)
                    if refusal is not None:
                        await self._refuse(envelope, request, refusal)
                        return
                    answer: TurnReply | ToolReply = await execute_turn(
                        self.model, request, timeout_s=self.timeout_s, tools=specs
                    )
                case ToolRequest():
                    refusal = refuse_tool(request, role=self.role, allowlist=allowlist)
                    if refusal is not None:
                        await self._refuse(envelope, request, refusal)
                        return
                    answer = await execute_tool(
                        self.tools, request, allowlist=allowlist,
                        workspaces=self.workspaces, sandbox=self.sandbox,
                        data_dir=self.data_dir, network=self.settings.network,
                    )
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
