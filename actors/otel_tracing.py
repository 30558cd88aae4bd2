"""The OpenTelemetry side of ``tracing.py``: the tracer provider and the spans of a run.

Imported only when tracing is on (``tracing.open_tracing``): the SDK and the exporter
cost ~120 ms of imports that a process with tracing off never pays.

The spans of one run (one trace; attribute keys in ``genai_attributes.py``)::

    invoke_workflow warden          INTERNAL  the run, in the process that drives it
    ├── plan planner                INTERNAL  the plan calls
    │   └── chat <planner model>    CLIENT
    ├── invoke_agent <role>         INTERNAL  one attempt of one step (events: policy
    │   │                                     decisions, approval waits)
    │   ├── chat <role's model>     CLIENT    in the worker that made the call
    │   └── execute_tool <tool>     INTERNAL  in the worker that ran it
    └── chat <planner model>                  the synthesis call

**Trace id = the run.** A run's trace id is derived from its id (the first 16 bytes of
``sha256(run_id)``), so a run resumed after a restart, in this process or another, goes
on in the same trace; each (re)start of the run adds one more ``invoke_workflow`` root
span to it, ended when the run ends or the process stops driving it. Calls answered from
the journal on a replay make no span (they are not made again).

**Nothing counted twice.** warden makes the only ``chat`` spans: it installs no
instrumentation of the ``anthropic`` SDK or of ``httpx`` (neither package is in the
lock), so no other span reports the same call or its tokens.

**No content unless asked.** Without ``capture_content`` spans carry names, ids, counts,
timings and outcomes; never a prompt, a reply, a tool's arguments or output, nor an
exception's message (which may quote them): ``error.type`` is the exception's class.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
from collections.abc import Iterator, Mapping

from opentelemetry import context as context_api
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from warden.actors import genai_attributes as ga
from warden.bus.wire import (
    Block,
    Message,
    TextBlock,
    ToolReply,
    ToolRequest,
    ToolResultBlock,
    ToolUseBlock,
    TurnReply,
    TurnRequest,
)

__all__ = ("RunTracer", "trace_id_of")

AttributeValue = str | bool | int | float | list[str]

_run_trace: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "warden_run_trace", default=None)
"""The trace id the next root span takes (set only while a run's root span starts)."""


def trace_id_of(run_id: str) -> int:
    """The trace id of run ``run_id``: the first 16 bytes of its SHA-256 (never 0)."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:16], "big") or 1


class _RunIds(RandomIdGenerator):
    """Random ids, except the trace id of a run's root span: ``trace_id_of(run)``."""

    def generate_trace_id(self) -> int:
        wanted = _run_trace.get()
        return wanted if wanted is not None else super().generate_trace_id()


class RunTracer:
    """Makes the spans of runs; one per process (``tracing.tracer()``).

    Every ``*_span`` method is a context manager that makes its span current for the
    block (so spans started inside are its children, and ``headers()`` carries it) and
    ends it on leaving; an exception leaving the block marks the span failed
    (``error.type`` = the exception's class) and goes on. Never blocks.
    """

    def __init__(self, provider: TracerProvider, *, gen_ai_provider: str,
                 capture_content: bool) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("warden")
        self.gen_ai_provider = gen_ai_provider
        """``gen_ai.provider.name`` of this process's model (the step spans')."""
        self.capture_content = capture_content

    @classmethod
    def start(cls, *, service: str, provider: str, capture_content: bool,
              exporter: SpanExporter | None = None) -> RunTracer:
        """A tracer exporting through a ``BatchSpanProcessor`` (its ``OTEL_BSP_*``
        settings) to ``exporter``, by default OTLP over HTTP as ``OTEL_*`` says."""
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter,
            )

            exporter = OTLPSpanExporter()
        # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; ours only
        # fills in a service name that neither gave.
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service}))
        # Shut down by open_tracing (flushed off the event loop), not at interpreter exit.
        provider_ = TracerProvider(resource=resource, id_generator=_RunIds(),
                                   shutdown_on_exit=False)
        provider_.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider_, gen_ai_provider=provider, capture_content=capture_content)

    def shutdown(self) -> None:
        """Export what is pending, then stop. Blocks (up to the exporter's timeout)."""
        self._provider.shutdown()

    # -- spans ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _span(self, name: str, attributes: Mapping[str, AttributeValue], *,
              kind: SpanKind = SpanKind.INTERNAL, run_id: str | None = None,
              ) -> Iterator[Span]:
        """A span, current in the block; with ``run_id``, the root of that run's trace
        (whatever span is current)."""
        parent: context_api.Context | None = None
        token = None
        if run_id is not None:
            parent = context_api.Context()
            token = _run_trace.set(trace_id_of(run_id))
        try:
            span = self._tracer.start_span(name, context=parent, kind=kind,
                                           attributes=attributes)
        finally:
            if token is not None:
                _run_trace.reset(token)
        with trace.use_span(span, end_on_exit=True, record_exception=False,
                            set_status_on_exception=False):
            try:
                yield span
            except Exception as exc:
                _failed(span, type(exc).__name__)
                raise

    def run_span(self, run_id: str, *, dry_run: bool) -> contextlib.AbstractContextManager[Span]:
        """The root span of run ``run_id`` in this process (``invoke_workflow warden``),
        in the run's own trace whatever span is current."""
        return self._span(f"{ga.OP_INVOKE_WORKFLOW} {ga.WORKFLOW}", {
            ga.OPERATION_NAME: ga.OP_INVOKE_WORKFLOW, ga.WORKFLOW_NAME: ga.WORKFLOW,
            ga.CONVERSATION_ID: run_id, ga.WARDEN_RUN_ID: run_id, ga.WARDEN_DRY_RUN: dry_run,
        }, run_id=run_id)

    @staticmethod
    def run_ended(span: Span, status: str, *, tokens: int, cost_usd: float) -> None:
        """The run ended ``status`` (a failure unless ``succeeded``)."""
        span.set_attribute(ga.WARDEN_RUN_STATUS, status)
        span.set_attribute(ga.WARDEN_TOKENS, tokens)
        span.set_attribute(ga.WARDEN_COST_USD, round(cost_usd, 6))
        if status != "succeeded":
            _failed(span, status)

    def plan_span(self, run_id: str) -> contextlib.AbstractContextManager[Span]:
        """The run's planning (``plan planner``): the plan calls are its children."""
        return self._span(f"{ga.OP_PLAN} planner", {
            ga.OPERATION_NAME: ga.OP_PLAN, ga.AGENT_NAME: "planner",
            ga.CONVERSATION_ID: run_id,
        })

    def step_span(self, run_id: str, *, role: str, step: int, attempt: int, model: str
                  ) -> contextlib.AbstractContextManager[Span]:
        """One attempt of one step (``invoke_agent <role>``)."""
        return self._span(f"{ga.OP_INVOKE_AGENT} {role}", {
            ga.OPERATION_NAME: ga.OP_INVOKE_AGENT, ga.PROVIDER_NAME: self.gen_ai_provider,
            ga.AGENT_NAME: role, ga.REQUEST_MODEL: model, ga.CONVERSATION_ID: run_id,
            ga.WARDEN_STEP: step, ga.WARDEN_STEP_ATTEMPT: attempt,
        })

    @staticmethod
    def step_ended(span: Span, *, tokens: int, cost_usd: float) -> None:
        span.set_attribute(ga.WARDEN_TOKENS, tokens)
        span.set_attribute(ga.WARDEN_COST_USD, round(cost_usd, 6))

    def chat_span(self, request: TurnRequest, provider: str
                  ) -> contextlib.AbstractContextManager[Span]:
        """One model call (``chat <model>``), where it is made."""
        attributes: dict[str, AttributeValue] = {
            ga.OPERATION_NAME: ga.OP_CHAT, ga.PROVIDER_NAME: provider,
            ga.REQUEST_MODEL: request.model, ga.REQUEST_MAX_TOKENS: request.max_tokens,
            ga.CONVERSATION_ID: request.run_id, ga.WARDEN_PURPOSE: request.purpose,
        }
        if request.step >= 0:
            attributes[ga.WARDEN_STEP] = request.step
            attributes[ga.WARDEN_TURN] = request.turn
        if self.capture_content:
            attributes[ga.SYSTEM_INSTRUCTIONS] = _json([{"type": "text",
                                                         "content": request.system}])
            attributes[ga.INPUT_MESSAGES] = _json([_message(m) for m in request.messages])
        return self._span(f"{ga.OP_CHAT} {request.model}", attributes, kind=SpanKind.CLIENT)

    def chat_ended(self, span: Span, reply: TurnReply) -> None:
        """The model call's answer: usage (input tokens with cache reads and writes),
        response model, finish reason; a failure when it is an error."""
        if reply.error is not None or reply.assistant is None:
            return  # marked failed where the error was caught (``failed``)
        usage = reply.usage
        span.set_attributes({
            ga.RESPONSE_MODEL: reply.model or "",
            ga.RESPONSE_FINISH_REASONS: [reply.stop_reason or ""],
            ga.USAGE_INPUT_TOKENS: usage.input_tokens + usage.cache_read_input_tokens
            + usage.cache_creation_input_tokens,
            ga.USAGE_OUTPUT_TOKENS: usage.output_tokens,
            ga.USAGE_CACHE_READ_INPUT_TOKENS: usage.cache_read_input_tokens,
            ga.USAGE_CACHE_CREATION_INPUT_TOKENS: usage.cache_creation_input_tokens,
        })
        if self.capture_content:
            span.set_attribute(ga.OUTPUT_MESSAGES, _json([{
                **_message(reply.assistant), "finish_reason": reply.stop_reason or "",
            }]))

    def tool_span(self, request: ToolRequest) -> contextlib.AbstractContextManager[Span]:
        """One tool call (``execute_tool <tool>``), where it runs."""
        attributes: dict[str, AttributeValue] = {
            ga.OPERATION_NAME: ga.OP_EXECUTE_TOOL, ga.TOOL_NAME: request.name,
            ga.TOOL_TYPE: "function", ga.CONVERSATION_ID: request.run_id,
            ga.WARDEN_CALL_KEY: request.idempotency_key, ga.WARDEN_TOOL_MODE: request.mode,
            ga.WARDEN_STEP: request.step,
        }
        if request.tool_call_id is not None:
            attributes[ga.TOOL_CALL_ID] = request.tool_call_id
        if self.capture_content:
            attributes[ga.TOOL_CALL_ARGUMENTS] = _json(request.arguments)
        return self._span(f"{ga.OP_EXECUTE_TOOL} {request.name}", attributes)

    def tool_ended(self, span: Span, reply: ToolReply) -> None:
        """The tool call's outcome: a failure when it did not succeed."""
        record = reply.record
        if reply.error is not None:
            _failed(span, "worker_error")
        elif record is not None and not record.ok:
            _failed(span, "timeout" if record.timed_out else "tool_error")
        if self.capture_content and record is not None:
            span.set_attribute(ga.TOOL_CALL_RESULT, record.output)

    # -- events and context --------------------------------------------------------------

    def decision(self, name: str, *, rule: str, decision: str, reason: str,
                 tool: str | None = None, key: str | None = None,
                 approval: str | None = None) -> None:
        """A policy event on the current span: ``rule`` decided ``decision`` (about tool
        ``tool``, call ``key``, approval ``approval``). ``reason`` only with
        ``capture_content``: a guard's reason may quote the call's arguments."""
        attributes: dict[str, AttributeValue] = {ga.WARDEN_RULE: rule,
                                                 ga.WARDEN_DECISION: decision}
        if tool is not None:
            attributes[ga.TOOL_NAME] = tool
        if key is not None:
            attributes[ga.WARDEN_CALL_KEY] = key
        if approval is not None:
            attributes[ga.WARDEN_APPROVAL_ID] = approval
        if self.capture_content:
            attributes[ga.WARDEN_REASON] = reason
        trace.get_current_span().add_event(name, attributes)

    @staticmethod
    def failed(error_type: str) -> None:
        """Mark the current span failed with ``error.type`` = ``error_type``."""
        _failed(trace.get_current_span(), error_type)

    @staticmethod
    def headers() -> dict[str, str]:
        """The current trace context as message headers (W3C ``traceparent``, through the
        configured propagator)."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier

    @staticmethod
    @contextlib.contextmanager
    def remote(headers: Mapping[str, str]) -> Iterator[None]:
        """Make the trace context a request's ``headers`` carry current for the block."""
        token = context_api.attach(propagate.extract(headers))
        try:
            yield
        finally:
            context_api.detach(token)


def _failed(span: Span, error_type: str) -> None:
    span.set_attribute(ga.ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR))


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _message(message: Message) -> dict[str, object]:
    """A message in the conventions' shape (``role``, ``parts``); a user message of tool
    results is the ``tool`` role's."""
    parts = [_part(block) for block in message.content]
    role: str = message.role
    if role == "user" and message.content and all(
            isinstance(b, ToolResultBlock) for b in message.content):
        role = "tool"
    return {"role": role, "parts": parts}


def _part(block: Block) -> dict[str, object]:
    match block:
        case TextBlock():
            return {"type": "text", "content": block.text}
        case ToolUseBlock():
            return {"type": "tool_call", "id": block.id, "name": block.name,
                    "arguments": block.input}
        case ToolResultBlock():
            return {"type": "tool_call_response", "id": block.tool_use_id,
                    "result": block.content}
