"""The wire: every message warden sends over NATS, as msgspec Structs encoded as JSON.

JSON, so ``nats pub warden.tasks '{"text": "..."}'`` and any language can talk to warden.
Every message is ``frozen``, ``kw_only`` and tagged (field ``type``), with a version ``v``.

Schema evolution rules:
- a new field gets a default and goes last; a field is never retyped or renamed;
- decoders ignore unknown fields, so an older warden reads a newer message;
- a breaking change is a new tag (``task.submit.v2``), never a new meaning for an old one.

Decoding a single message type makes its tag optional, which is why a task may be
submitted as just ``{"text": "..."}``.

API requests (``RunsQuery``, ``RunQuery``, ``DeadLetterRetry``, ``StrictTaskSubmission``)
are the one exception to "ignore unknown fields": they forbid them, so a client's typo
(``{"run": ...}`` for ``run_id``) is an error naming the field, not a default silently
used. Every message from outside is decoded under limits (``bus/decoding.py``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from warden.config import DEFAULT_TENANT, TENANT_PATTERN

TenantName = Annotated[str, msgspec.Meta(pattern=TENANT_PATTERN)]
"""A tenant's name, checked where it is decoded (a bad one is an error naming the field)."""


class _Wire(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=True):
    """Base of every wire message."""


# -- conversation content (the Messages API shape, provider-neutral) --------------------


class TextBlock(_Wire, frozen=True, kw_only=True, tag="text"):
    text: str


class ToolUseBlock(_Wire, frozen=True, kw_only=True, tag="tool_use"):
    id: str
    name: str
    input: dict[str, object] = {}


class ToolResultBlock(_Wire, frozen=True, kw_only=True, tag="tool_result"):
    tool_use_id: str
    content: str
    is_error: bool = False


Block = TextBlock | ToolUseBlock | ToolResultBlock


class Message(_Wire, frozen=True, kw_only=True, tag="message"):
    role: Literal["user", "assistant"]
    content: list[Block]


class ToolSpec(_Wire, frozen=True, kw_only=True, tag="tool_spec"):
    name: str
    description: str
    input_schema: dict[str, object]


class Usage(_Wire, frozen=True, kw_only=True, tag="usage"):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens
            + other.cache_creation_input_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )


# -- tasks ------------------------------------------------------------------------------


class TaskSubmission(_Wire, frozen=True, kw_only=True, tag="task.submit"):
    """A task for warden, published on ``warden.tasks``.

    ``id`` becomes the run id; clients choose it so they can follow the run's events
    before publishing (the CLI does). Without it the daemon derives one.
    """

    v: int = 1
    id: str | None = None
    text: str
    scenario: str | None = None
    """Names a bundled script for the scripted model (``fizzbuzz``, ``ledger``, ...)."""
    budget_usd: float | None = None
    """Overrides the configured per-run budget, downwards or upwards."""
    dry_run: bool = False
    """Run it without its side effects (``supervisor/dry_run.py``): every side-effecting
    tool call is intercepted, recorded and answered with its simulation; the run's id is
    ``dry-<id>``, so it never shares a key with a real run."""
    tenant: TenantName | None = None
    """Whose run it is (1-64 of ``[A-Za-z0-9_.-]``): its spend counts at that tenant's
    day budget (``budgets.tenant_day_*``). ``None``: the ``default`` tenant."""


class StrictTaskSubmission(TaskSubmission, frozen=True, kw_only=True,
                           forbid_unknown_fields=True):
    """A ``TaskSubmission`` as the API's ``submit`` reads it: unknown fields refused."""


# -- work handed to workers -------------------------------------------------------------


class TurnRequest(_Wire, frozen=True, kw_only=True, tag="turn.request"):
    """One model call, built whole by a run supervisor and executed by a worker.

    The parent owns the loop: it sends one turn, journals the reply, runs the tools the
    model asked for as ``ToolRequest``s, and decides whether another turn follows; so the
    step cap never depends on the worker counting, and every model call and tool call is
    journalled by the parent. The parent also builds the whole request — ``model``,
    ``system``, ``tools`` — from its one config, so what it reserved of the budget is what
    the worker sends (a worker whose own settings differ cannot break the bound).
    ``deadline_s`` is the attempt's deadline: the worker cancels the call there and answers,
    before the parent stops waiting.

    The conversation is sent whole: workers are stateless and share a queue group, so the
    next turn may reach another worker (the journal stores each turn's delta only).
    """

    v: int = 1
    run_id: str
    step: int
    turn: int
    role: str
    max_tokens: int
    messages: list[Message]
    scenario: str | None = None
    model: str = ""
    system: str = ""
    tools: msgspec.Raw = msgspec.Raw(b"[]")
    """The JSON array of the call's ``ToolSpec``s, kept encoded: the parent encodes each
    role's once, and a worker decodes each distinct one once (``tool_specs_decoder``);
    on the wire it is the same array a ``list[ToolSpec]`` would be."""
    purpose: Literal["plan", "step", "synthesize"] = "step"
    deadline_s: float = 0.0
    """0: no deadline of the parent's (the worker's own ``models.timeout_s`` applies)."""


class ToolRequest(_Wire, frozen=True, kw_only=True, tag="tool.request"):
    """One tool call, handed by a run supervisor to a worker of the step's role.

    No path travels: the worker confines the tool to the run's workspace under a root of
    its own (``<its data dir>/workspaces/<run_id>``), so a worker on another machine works
    and no sender can point a tool anywhere else.

    ``idempotency_key`` is derived from (run, step, attempt, turn, call) and is the same
    when a replay sends the call again. ``mode`` ``reconcile`` asks the tool whether an
    interrupted call with that key already acted, instead of acting; ``simulate`` (a dry
    run) asks what the call would return, without acting.
    """

    v: int = 1
    run_id: str
    step: int
    role: str
    call_index: int
    name: str
    arguments: dict[str, object] = {}
    idempotency_key: str
    mode: Literal["run", "reconcile", "simulate"] = "run"
    tool_call_id: str | None = None
    """The model's id of this tool use (``toolu_...``), for the trace's
    ``gen_ai.tool.call.id``; never used to decide anything."""


class ToolCallRecord(_Wire, frozen=True, kw_only=True, tag="tool_call"):
    """One tool call as it went: ``ok=False`` for an error the model should see.

    ``timed_out`` says the call was stopped at its deadline (the sandbox's ``timeout_s``,
    or the registry's); it is then also ``ok=False``. Absent on the wire when false, so
    older readers and records are unchanged.
    """

    name: str
    arguments: dict[str, object] = {}
    ok: bool
    output: str
    duration_ms: float
    timed_out: bool = False


class TurnReply(_Wire, frozen=True, kw_only=True, tag="turn.reply"):
    """The worker's answer to a ``TurnRequest``: the model's message and tool results."""

    v: int = 1
    run_id: str
    step: int
    turn: int
    assistant: Message | None = None
    stop_reason: str = "end_turn"
    usage: Usage = Usage()
    model: str = ""
    latency_ms: float = 0.0
    error: str | None = None
    retryable: bool = False
    retry_after_s: float | None = None
    """The provider's ``retry-after`` with a retryable ``error``, in seconds."""
    status: int | None = None
    """The provider's HTTP status with an ``error`` (429: rate limited, 529: overloaded),
    when it answered one: the parent's rate limiter and fallback chains read it."""


class ToolReply(_Wire, frozen=True, kw_only=True, tag="tool.reply"):
    """The worker's answer to a ``ToolRequest``.

    ``record`` is the call (``ok=False`` for an error the model should see); in
    ``reconcile`` mode, ``None`` with no ``error`` means the interrupted call had not acted.
    ``error`` is set when the worker could not answer at all (a crash, a bad request).
    """

    v: int = 1
    run_id: str
    idempotency_key: str
    record: ToolCallRecord | None = None
    error: str | None = None


WorkRequest = TurnRequest | ToolRequest


# -- events and the API ----------------------------------------------------------------


class RunEvent(_Wire, frozen=True, kw_only=True, tag="run.event"):
    """A change in a run, published on ``warden.runs.<run_id>.events``."""

    v: int = 1
    run_id: str
    seq: int
    kind: str
    status: str
    message: str = ""
    step: int | None = None
    role: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0


MAX_PAGE = 1000
"""The most runs one ``runs`` request may ask for; a reply is also bounded in bytes."""


class RunsQuery(_Wire, frozen=True, kw_only=True, tag="runs.query",
                forbid_unknown_fields=True):
    """A page of runs, newest first: the ``limit`` newest older than cursor ``before``
    (a ``RunList.next_before``; ``None`` for the newest)."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)] = 100
    status: str | None = None
    before: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    v: int = 1


class RunQuery(_Wire, frozen=True, kw_only=True, tag="run.query", forbid_unknown_fields=True):
    run_id: Annotated[str, msgspec.Meta(max_length=128)]
    v: int = 1


class StepSummary(_Wire, frozen=True, kw_only=True, tag="step.summary"):
    index: int
    role: str
    instruction: str
    status: str
    turns: int = 0
    output: str = ""
    tokens: int = 0
    cost_usd: float = 0.0


DryRunDecision = Literal["intercepted", "refused"]
"""What became of a dry run's tool call that would have acted (``InterceptedCall``)."""


class InterceptedCall(_Wire, frozen=True, kw_only=True, tag="dry_run.call"):
    """What a dry run would have done at one tool call (``RunSummary.intercepted``).

    ``decision`` ``intercepted``: the call passed every guard named in ``reason`` and was
    not executed; ``output`` is what the model got instead (the tool's simulation, or
    "dry run: not executed"). ``refused``: a guard (``by``) refused it, so a real run
    would have been refused too; ``output`` is the refusal the model read.
    """

    key: str
    step: int
    turn: int
    tool: str
    arguments: dict[str, object] = {}
    decision: DryRunDecision
    by: str = ""
    reason: str = ""
    output: str = ""
    simulated: bool = False
    """``output`` is the tool's own simulation (its ``simulate`` hook)."""


class AnomalyFlag(_Wire, frozen=True, kw_only=True, tag="anomaly"):
    """One anomaly of an ended run (``RunSummary.anomalies``; ``supervisor/anomaly.py``).

    ``kind`` is one of ``cost``, ``duration``, ``retries``, ``tokens_per_step`` (far
    above the baseline of runs of the same kind: ``value`` went past ``threshold``), and
    ``repeated_tool_sequence``, ``repeated_tool_call`` (``value`` repeats, ``threshold``
    the configured count).
    """

    kind: str
    value: float
    threshold: float
    detail: str = ""


class RunSummary(_Wire, frozen=True, kw_only=True, tag="run.summary"):
    id: str
    status: str
    text: str
    scenario: str | None = None
    created_at: float
    updated_at: float
    tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    result: str | None = None
    steps: list[StepSummary] = []
    truncated: bool = False
    """Some text was cut to keep the reply under the server's max payload (listings cut
    each run's text; ``show`` cuts step outputs, then the result): ``show`` gives more."""
    already_submitted: bool = False
    """In a ``submit`` reply: the id was known, nothing was queued, this is the stored run."""
    dry_run: bool = False
    """The run is a dry run: its side-effecting tool calls were not executed."""
    intercepted: list[InterceptedCall] = []
    """A dry run's tool calls that would have acted, in order: what it would have done
    (``show`` only)."""
    anomalies: list[AnomalyFlag] = []
    """The run's anomaly flags, recorded when it ended (``show`` only)."""
    tenant: str = DEFAULT_TENANT
    """Whose run it is (``show`` only; a listing leaves it at its default)."""


class RunList(_Wire, frozen=True, kw_only=True, tag="run.list"):
    """One page of runs, newest last (as ``warden runs`` prints them)."""

    runs: list[RunSummary]
    next_before: str | None = None
    """The cursor of the next (older) page; ``None`` when this page is the last."""


class DeadLetterInfo(_Wire, frozen=True, kw_only=True, tag="dead_letter"):
    id: int
    stream_seq: int
    msg_id: str | None = None
    reason: str
    deliveries: int
    created_at: float
    retried_at: float | None = None
    preview: str = ""


class DeadLetterList(_Wire, frozen=True, kw_only=True, tag="dead_letter.list"):
    letters: list[DeadLetterInfo]


class DeadLetterRetry(_Wire, frozen=True, kw_only=True, tag="dead_letter.retry",
                      forbid_unknown_fields=True):
    id: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    v: int = 1


class PingQuery(_Wire, frozen=True, kw_only=True, tag="ping.query", forbid_unknown_fields=True):
    """The ``ping`` request: ``{}`` (or an empty payload)."""

    v: int = 1


class DaemonHealth(_Wire, frozen=True, kw_only=True, tag="daemon.health"):
    """The ``ping`` reply: which daemon answered, and how it is."""

    daemon_id: str
    version: str
    data_dir: str
    pid: int
    active_runs: int
    open_breakers: list[str]
    intake: str
    """``consuming``, ``standby`` (another daemon holds the task stream) or ``starting``;
    required, like ``open_breakers``, so a plain JSON reader sees them always."""
    intake_holder: str | None = None
    """The daemon that holds the task stream, when it is another one."""


class ErrorReply(_Wire, frozen=True, kw_only=True, tag="error"):
    error: str
    field: str | None = None


# -- approvals (supervisor/approvals.py; README, "Approvals") ------------------------------


class ApprovalInfo(_Wire, frozen=True, kw_only=True, tag="approval.request"):
    """An approval request, as published on ``warden.approvals.<run>`` and listed by the
    ``approvals`` verb. ``hash`` is what a decision must name."""

    id: str
    run_id: str
    step: int
    call_key: str
    tool: str
    arguments: dict[str, object]
    risk: str
    why: str
    hash: str
    created_at: float
    expires_at: float
    status: str = "pending"


class ApprovalList(_Wire, frozen=True, kw_only=True, tag="approval.list"):
    approvals: list[ApprovalInfo]


class ApprovalsQuery(_Wire, frozen=True, kw_only=True, tag="approvals.query",
                     forbid_unknown_fields=True):
    """The ``approvals`` request: the pending requests (``{}``)."""

    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)] = 100
    v: int = 1


class ApprovalDecision(_Wire, frozen=True, kw_only=True, tag="approval.decision"):
    """A decision on one request, as the operator signs it: it names the request's
    ``id`` and ``hash``; ``nonce`` tells its outcome apart from any other's."""

    id: str
    run_id: str
    hash: str
    verdict: Literal["approve", "deny"]
    reason: str = ""
    issued_at: float
    nonce: str
    v: int = 1


class SignedDecision(_Wire, frozen=True, kw_only=True, tag="approval.signed"):
    """What is published on ``warden.approvals.<run>.decision``: ``body`` is the
    ``ApprovalDecision``'s JSON exactly as signed, ``signature`` its ed25519 signature
    (base64url, the nkey's) by the key ``signer`` (a public user nkey, ``U...``)."""

    body: str
    signature: str
    signer: str
    v: int = 1


class ApprovalOutcome(_Wire, frozen=True, kw_only=True, tag="approval.outcome"):
    """The daemon's answer to one decision, on ``warden.approvals.<run>.outcome``:
    ``applied`` or refused, and why."""

    id: str
    nonce: str
    applied: bool
    status: str
    """The request's status now (``unknown`` for an id the journal does not hold)."""
    reason: str


# -- every call of a run (``warden show RUN --calls``; the API's ``calls``) ---------------


class CallView(_Wire, frozen=True, kw_only=True, tag="call.view"):
    """One recorded call of a run, as the journal holds it. ``kind`` ``model``: ``name``
    is the model, ``request`` the JSON of what was sent (the messages new since the
    step's previous call; the system prompt and tool names with the first), ``response``
    the JSON of the reply's content. ``tool``: ``name`` is the tool, ``request`` its
    arguments' JSON, ``response`` its output. ``cut``: a text was shortened to fit."""

    kind: Literal["model", "tool"]
    step: int | None = None
    turn: int | None = None
    name: str
    purpose: str = ""
    request: str
    response: str
    ok: bool = True
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float = 0.0
    duration_ms: float = 0.0
    at: float = 0.0
    cut: bool = False


class CallsQuery(_Wire, frozen=True, kw_only=True, tag="calls.query",
                 forbid_unknown_fields=True):
    """One page of a run's calls, from call ``after`` (an index) on."""

    run_id: Annotated[str, msgspec.Meta(max_length=128)]
    after: Annotated[int, msgspec.Meta(ge=0)] = 0
    v: int = 1


class RunCalls(_Wire, frozen=True, kw_only=True, tag="run.calls"):
    """A page of a run's calls in the order they were recorded; ``next``: the ``after``
    of the next page, ``None`` at the end."""

    run_id: str
    calls: list[CallView]
    next: int | None = None


# -- spend against the budgets (``warden spend``; the API's ``spend``) ---------------------


class SpendQuery(_Wire, frozen=True, kw_only=True, tag="spend.query",
                 forbid_unknown_fields=True):
    """The ``spend`` request: today's spend, of every tenant or of ``tenant`` only."""

    tenant: TenantName | None = None
    v: int = 1


class SpendLevel(_Wire, frozen=True, kw_only=True, tag="spend.level"):
    """One budget level today: ``level`` ``day`` (``name`` is the day's date),
    ``tenant`` (the tenant) or ``run`` (the run id). ``spent_*`` is what recorded calls
    cost, ``reserved_*`` what calls in flight hold; ``limit_*`` 0 is no limit, and then
    ``left_*`` is ``None``. Cache tokens are those of today's calls (included in
    ``spent_tokens``)."""

    level: Literal["day", "tenant", "run"]
    name: str
    spent_usd: float = 0.0
    spent_tokens: int = 0
    reserved_usd: float = 0.0
    reserved_tokens: int = 0
    limit_usd: float = 0.0
    limit_tokens: int = 0
    left_usd: float | None = None
    left_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    tenant: str | None = None
    """A run's tenant."""
    status: str | None = None
    """A run's status."""


class SpendReport(_Wire, frozen=True, kw_only=True, tag="spend.report"):
    """Today's spend at each level: the day, each tenant that spent today or has its own
    limits (or only the one asked for), and each run with calls recorded today (its
    spend today only, newest first, at most ``MAX_SPEND_RUNS``; ``more_runs``: there
    were more)."""

    day: SpendLevel
    timezone: str
    starts_at: float
    ends_at: float
    tenants: list[SpendLevel] = []
    runs: list[SpendLevel] = []
    more_runs: bool = False


MAX_SPEND_RUNS = 200


Reply = (RunSummary | RunList | DeadLetterList | DaemonHealth | ApprovalList | RunCalls
         | SpendReport | ErrorReply)

encoder = msgspec.json.Encoder()
task_decoder = msgspec.json.Decoder(TaskSubmission)
strict_task_decoder = msgspec.json.Decoder(StrictTaskSubmission)
work_request_decoder = msgspec.json.Decoder(WorkRequest)
tool_specs_decoder = msgspec.json.Decoder(list[ToolSpec])
turn_reply_decoder = msgspec.json.Decoder(TurnReply)
tool_reply_decoder = msgspec.json.Decoder(ToolReply)
event_decoder = msgspec.json.Decoder(RunEvent)
runs_query_decoder = msgspec.json.Decoder(RunsQuery)
run_query_decoder = msgspec.json.Decoder(RunQuery)
dlq_retry_decoder = msgspec.json.Decoder(DeadLetterRetry)
ping_query_decoder = msgspec.json.Decoder(PingQuery)
reply_decoder = msgspec.json.Decoder(Reply)
approvals_query_decoder = msgspec.json.Decoder(ApprovalsQuery)
calls_query_decoder = msgspec.json.Decoder(CallsQuery)
spend_query_decoder = msgspec.json.Decoder(SpendQuery)
decision_decoder = msgspec.json.Decoder(ApprovalDecision)
signed_decision_decoder = msgspec.json.Decoder(SignedDecision)
approval_info_decoder = msgspec.json.Decoder(ApprovalInfo)
outcome_decoder = msgspec.json.Decoder(ApprovalOutcome)
