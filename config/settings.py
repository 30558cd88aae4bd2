"""The typed settings of warden, as msgspec Structs.

Schema rules: config Structs forbid unknown fields, so a typo fails loudly and names the
key (``ConfigError``); every field has a default here or in ``defaults.toml``; a new field
gets a default. Durations are seconds (``_s``), money is US dollars (``_usd``), sizes say
their unit (``_mb``, ``_bytes``).
"""

from __future__ import annotations

from typing import Literal

import msgspec
from warden.config.mcp import McpSettings
from warden.config.policy import PolicySettings
from warden.config.rate_limits import RateLimitSettings
from warden.config.webhooks import WebhookSettings

ROLES: tuple[str, ...] = ("research", "code", "review")
"""The worker roles warden ships. A plan step names one of them."""


class _Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every config Struct: immutable, keyword-only, unknown keys are errors."""


class NatsSettings(_Config, frozen=True, kw_only=True):
    url: str | None = None
    """An existing NATS server to use. ``None``: start the embedded nats-server."""
    port: int = 0
    """Port of the embedded server; 0 picks a free one."""
    connect_timeout_s: float = 5.0
    """How long to wait for a connection (and for the embedded server to accept one)."""
    request_timeout_s: float = 10.0
    """Default deadline of a request/reply on the bus (CLI to daemon)."""
    publish_call_events: bool = False
    """Publish every model call and tool call on ``warden.runs.<run>.events`` too. Off by
    default: each would be a stored JetStream message (11 more per triad task, next to its
    13 other events), the journal records every call in full either way, and the run's
    status, step and turn events carry its running tokens and cost."""
    # Credentials for ``url`` (README, "Security model"). With the embedded server none
    # are needed: the daemon generates its identities and ``daemon.json`` names them.
    creds: str | None = None
    """A ``.creds`` file (user JWT and nkey seed). ``WARDEN_NATS_CREDS``."""
    nkey_seed: str | None = None
    """A file holding a user nkey seed (``SU...``). ``WARDEN_NATS_NKEY_SEED``."""
    user: str | None = None
    """User name, with ``password``. ``WARDEN_NATS_USER``."""
    password: str | None = None
    """Password of ``user``; never shown in a repr or a log. ``WARDEN_NATS_PASSWORD``."""
    token: str | None = None
    """An authentication token; never shown in a repr or a log. ``WARDEN_NATS_TOKEN``."""
    tls_ca: str | None = None
    """CA certificates (PEM) to verify the server with. ``WARDEN_NATS_TLS_CA``."""
    tls_cert: str | None = None
    """Client certificate (PEM) for mutual TLS, with ``tls_key``. ``WARDEN_NATS_TLS_CERT``."""
    tls_key: str | None = None
    """Key of ``tls_cert`` (PEM). ``WARDEN_NATS_TLS_KEY``."""

    def __repr__(self) -> str:
        # Settings are printed and logged whole; the secrets among them never are.
        shown = ", ".join(
            f"{name}={'***' if name in _SECRET_KEYS and value is not None else repr(value)}"
            for name in self.__struct_fields__
            for value in (getattr(self, name),)
        )
        return f"NatsSettings({shown})"


_SECRET_KEYS = frozenset({"password", "token"})


class PriceEntry(_Config, frozen=True, kw_only=True):
    """US dollars per million tokens of one model."""

    input_per_mtok: float
    output_per_mtok: float
    cache_write_per_mtok: float = 0.0
    cache_read_per_mtok: float = 0.0


class PricingSettings(_Config, frozen=True, kw_only=True):
    as_of: str
    """The date the prices were taken from the provider's price list (YYYY-MM-DD)."""
    models: dict[str, PriceEntry] = {}


class EndpointSettings(_Config, frozen=True, kw_only=True):
    """Where one model is served (``[models.endpoints."<model>"]``): a provider, its
    endpoint, and the environment variable of its key."""

    provider: Literal["anthropic", "openai"] = "openai"
    """``openai``: a Chat Completions endpoint (vLLM, Ollama, llama.cpp, OpenAI);
    ``anthropic``: a Messages API endpoint."""
    base_url: str | None = None
    """The endpoint (``http://127.0.0.1:11434/v1``); ``None``: the provider's own API."""
    api_key_env: str = ""
    """Name of the environment variable holding the key; empty: the provider's usual one
    (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``). Unset or empty: no key is sent, for an
    ``openai`` endpoint at a ``base_url`` (a local server); an error otherwise."""


class ModelSettings(_Config, frozen=True, kw_only=True):
    provider: Literal["auto", "anthropic", "openai", "scripted"] = "auto"
    """``auto``: anthropic when ANTHROPIC_API_KEY is set, else the scripted model.
    ``openai``: every model at one OpenAI-compatible Chat Completions endpoint
    (``openai_base_url``; README, "Local and OpenAI-compatible models")."""
    planner: str = "claude-sonnet-4-6"
    """Model of the plan calls of the run supervisor (and of its synthesis calls, unless
    ``synthesizer`` names another)."""
    planner_fallback: list[str] = []
    """Models that serve a plan call, in order, when the one before them is overloaded
    (HTTP 529), its breaker is open, or the run's budget asks for a downgrade
    (``budgets.downgrade_below``). README, "Model tiering and fallback"."""
    synthesizer: str = ""
    """Model of the synthesis call that writes a run's result; empty: ``planner``."""
    synthesizer_fallback: list[str] = []
    """The synthesis call's fallback chain, as ``planner_fallback``; used only when
    ``synthesizer`` is set (otherwise the planner's chain serves)."""
    max_tokens: int = 2048
    """Ceiling of completion tokens per call; also what a call reserves of the budget."""
    scripted_latency_ms: float = 0.0
    """Latency of each scripted model call (``WARDEN_SCRIPTED_LATENCY_MS``)."""
    script_files: list[str] = []
    """Extra TOML scripts for the scripted model, tried before the bundled ones."""
    anthropic_base_url: str | None = None
    """Messages API endpoint; ``None`` is the SDK's default."""
    timeout_s: float = 120.0
    """Deadline of one attempt of a model call. The worker making the call cancels it there
    (the HTTP request is cancelled, not left running) and answers before the parent stops
    waiting, so a reply the provider billed is never lost."""
    max_retries: int = 0
    """The SDK's own retries inside one attempt. 0: warden's ``attempts`` are the retries,
    so ``attempts`` bounds the requests one call can make."""
    attempts: int = 4
    """Requests one model call may make at most (the first and its retries)."""
    patience_s: float = 60.0
    """How long one model call may wait out a failing endpoint (backoff, ``retry-after``,
    an open breaker) before it fails with its last error: an outage shorter than this is
    waited out without failing runs."""
    retry_after_cap_s: float = 30.0
    """The longest ``retry-after`` honoured; a longer one waits this long."""
    prompt_caching: bool = True
    """Anthropic prompt caching on what repeats: a cache point after the system prompt
    (with the tool definitions before it) and at the end of the conversation so far, so
    a step's next turn reads its growing conversation from the cache. Cache writes and
    reads are priced by ``[pricing]``'s cache rates."""

    # -- an OpenAI-compatible endpoint (``provider = "openai"``, actors/openai_model.py) --
    openai_base_url: str | None = None
    """Chat Completions endpoint up to ``/v1`` (``http://127.0.0.1:8000/v1`` for vLLM,
    ``http://127.0.0.1:11434/v1`` for Ollama); ``None``: OpenAI's own API."""
    openai_api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the endpoint's key (the key itself is
    never in the settings). Unset or empty: no ``Authorization`` header is sent, which a
    local server needs; OpenAI's own API (``openai_base_url`` unset) then refuses to start."""
    endpoints: dict[str, EndpointSettings] = {}
    """Per-model endpoints, by model name: a call of a model listed here goes to its
    endpoint, any other to ``provider``'s. One daemon can so mix providers, and a fallback
    chain can end in a local model (README, "Local and OpenAI-compatible models")."""

    @property
    def plan_chain(self) -> tuple[str, ...]:
        """The models of a plan call, first choice first."""
        return (self.planner, *self.planner_fallback)

    @property
    def synthesis_chain(self) -> tuple[str, ...]:
        """The models of a synthesis call, first choice first."""
        if not self.synthesizer:
            return self.plan_chain
        return (self.synthesizer, *self.synthesizer_fallback)


class RoleSettings(_Config, frozen=True, kw_only=True):
    model: str
    """Which model serves this role (a key of the price table)."""
    fallback: list[str] = []
    """Models that serve this role's steps, in order, when the one before them is
    overloaded (HTTP 529), its breaker is open, or the run's budget asks for a downgrade:
    the role's model chain is ``[model, *fallback]``. Each needs a price."""
    tools: list[str]
    """The allowlist: tools this role may call; anything else is refused."""
    prompt: str
    """The role's system prompt."""
    concurrency: int = 64
    """Requests one worker pool of this role serves at once."""
    on_failure: Literal["fail", "skip", "escalate"] = "fail"
    """What a step of this role that failed every retry does to the run: fail it, skip
    the step and go on, or stop and escalate to a human (``needs_human``)."""
    network: bool = False
    """Whether code this role runs in the sandbox (``run_python``, ``run_tests``) may use
    the network. Off: under bubblewrap the code gets a network namespace of its own with
    only a loopback on which nothing listens; without bubblewrap this cannot be enforced,
    which the worker's start-up warning says."""
    auto_approve: Literal["low", "medium"] = "low"
    """The highest risk this role's tool calls run at without a human's approval
    (README, "Approvals"): ``low`` (the cautious default: every medium-risk call waits
    for one) or ``medium``. A ``high`` call always waits, and so does any medium one
    while its step is tainted by untrusted output."""
    confidence_threshold: float = 0.0
    """A step of this role whose answer states a confidence below this (a last line
    ``Confidence: 0.6``, ``supervisor/confidence.py``), and that used a tool of medium or
    high risk, waits for a person to accept its answer (README, "Approvals"). 0: off."""

    @property
    def chain(self) -> tuple[str, ...]:
        """The models of this role's step turns, first choice first."""
        return (self.model, *self.fallback)


Risk = Literal["low", "medium", "high"]
"""How much harm a tool call can do; what the policy of later guards reads."""


class ApprovalSettings(_Config, frozen=True, kw_only=True):
    """Approvals of risky tool calls (``[approvals]``; README, "Approvals")."""

    timeout_s: float = 3600.0
    """How long a request waits for a decision; then it expires, denied."""
    on_expiry: Literal["tell_model", "needs_human"] = "tell_model"
    """An expired request: the model reads "approval expired" and the step goes on
    (``tell_model``), or the run stops in ``needs_human``."""
    on_deny: Literal["tell_model", "needs_human"] = "tell_model"
    """A denied request: the model reads the denial and its reason, or the run stops in
    ``needs_human``."""
    operator_key: str | None = None
    """The public user nkey (``U...``) whose signature a decision needs, on an external
    server (``nats.url``). With the embedded server: the generated operator identity's."""
    webhooks: list[WebhookSettings] = []
    """Where each new request is POSTed (``[[approvals.webhooks]]``, README "Approval
    webhooks"); checked at the daemon's start (``config/webhooks.py``)."""


class ToolSettings(_Config, frozen=True, kw_only=True):
    """A user tool: a Python function named in config (``[tools.<name>]``). Its schema
    comes from the function's type hints, its description from its docstring
    (``actors/tools/function.py``). The defaults are the cautious ones."""

    function: str
    """``module:attribute`` of a sync or async function, importable where workers run."""
    risk: Risk = "medium"
    side_effects: bool = True
    idempotent_by_key: bool = False
    """Whether calling it twice with the same idempotency key acts once. A function with
    an ``idempotency_key`` parameter receives the call's key either way."""
    reconcile: str | None = None
    """``module:attribute`` answering, with the same arguments, whether an interrupted
    call acted: its output if it did, ``None`` if not."""
    simulate: str | None = None
    """``module:attribute`` answering, with the same arguments, what a dry run returns."""
    timeout_s: float = 30.0
    """Deadline of one call; past it the call is stopped and the model told."""
    trusted_output: bool = True
    """``false`` when what the function returns comes from outside (a web page, an
    e-mail, a ticket) and may carry someone else's instructions: its output taints the
    step, and the step's later medium- and high-risk calls need an approval."""


class LimitSettings(_Config, frozen=True, kw_only=True):
    max_steps_per_run: int = 8
    """Steps of a plan (counting retries) the run supervisor dispatches at most."""
    max_turns_per_step: int = 6
    """Model turns inside one step (each may run tools); the parent stops the step there."""
    max_steps_per_worker: int = 4
    """Steps one role may be handed within one run."""
    run_budget_usd: float = 0.50
    """Per-run cost budget; a call that could exceed it is not made."""
    step_timeout_s: float = 120.0
    """Deadline of one turn handed to a worker over NATS."""
    plan_attempts: int = 2
    """Plan calls tried before an invalid plan fails the run."""
    step_retries: int = 3
    """Retries of a failed step (with the failure as feedback) before ``on_failure``."""
    retry_base_s: float = 0.5
    """Backoff before retry n is uniform in [0, min(retry_max_s, retry_base_s * 2**n)]."""
    retry_max_s: float = 10.0
    transport_patience_s: float = 60.0
    """How long a step waits out an unreachable worker (no responders, lost connection,
    open breaker) before that counts as the step failing."""
    max_task_bytes: int = 65536
    """Largest task submission accepted; larger ones are rejected."""


TENANT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
"""A tenant's name: 1-64 of letters, digits, ``_``, ``.`` and ``-`` (``TaskSubmission.tenant``
and the keys of ``budgets.tenants``)."""
DEFAULT_TENANT = "default"
"""The tenant of a run submitted without one."""


class TenantBudget(_Config, frozen=True, kw_only=True):
    """One tenant's own day limits (``[budgets.tenants.<name>]``); an unset one is the
    ``budgets.tenant_day_*`` every tenant has."""

    day_usd: float | None = None
    day_tokens: int | None = None


class BudgetSettings(_Config, frozen=True, kw_only=True):
    """Budgets above and below the run (``supervisor/budget.py``; README, "Budgets").

    Levels: the day (every run of the daemon), a tenant's day, the run, and each step of
    a run; each in USD and in tokens. 0 means no limit at that level. The run's USD limit
    is ``limits.run_budget_usd`` (or the submission's ``budget_usd``).
    """

    day_usd: float = 0.0
    """What all runs together may spend per day, USD."""
    day_tokens: int = 0
    """Tokens all runs together may use per day."""
    tenant_day_usd: float = 0.0
    """What each tenant's runs may spend per day, USD (unless ``tenants`` says otherwise)."""
    tenant_day_tokens: int = 0
    """Tokens each tenant's runs may use per day."""
    tenants: dict[str, TenantBudget] = {}
    """Per-tenant day limits, by tenant name."""
    run_tokens: int = 0
    """Tokens one run may use."""
    step_usd: float = 0.0
    """What one step of a run (all its attempts and turns) may spend, USD."""
    step_tokens: int = 0
    """Tokens one step of a run may use."""
    timezone: str = "UTC"
    """The time zone of the day (an IANA name, e.g. ``Europe/Paris``)."""
    day_starts_at_hour: int = 0
    """The hour (0-23, in ``timezone``) at which a day starts."""
    downgrade_below: float = 0.0
    """When a run's USD left falls below this fraction of its limit, its later calls move
    down the model chain (``Budget.wants_downgrade``); 0: never."""


class BreakerSettings(_Config, frozen=True, kw_only=True):
    failure_threshold: int = 5
    """Consecutive failures that open a breaker."""
    cooldown_s: float = 30.0
    """How long an open breaker fails fast before letting probes through."""
    half_open_probes: int = 1
    """Calls let through while half-open; that many successes close the breaker."""


class SupervisionSettings(_Config, frozen=True, kw_only=True):
    max_restarts: int = 3
    period_s: float = 5.0
    shutdown_timeout_s: float = 5.0


class IntakeSettings(_Config, frozen=True, kw_only=True):
    max_deliveries: int = 5
    """Deliveries of a task message before it goes to the dead letters (``warden dlq``)."""
    ack_wait_s: float = 30.0
    """How long the server waits for an ack before redelivering a task message."""
    batch: int = 256
    """Task messages fetched at once."""
    lock_ttl_s: float = 15.0
    """The intake lease (one daemon consumes the task stream): how long it outlives a
    holder that stopped refreshing it (killed). A daemon in standby takes over within
    ``lock_ttl_s * 4 / 3`` of the holder's death; a clean stop hands over at once."""


class SandboxSettings(_Config, frozen=True, kw_only=True):
    timeout_s: float = 30.0
    cpu_seconds: int = 20
    memory_mb: int = 1024
    open_files: int = 256
    file_size_mb: int = 16
    max_output_bytes: int = 65536
    isolation: Literal["auto", "bubblewrap", "uid", "none"] = "auto"
    """How the sandbox is kept from the daemon (``actors/isolation.py``). ``auto``: the
    best that works here: ``bubblewrap`` (own PID, user, IPC, UTS and network namespaces,
    only the interpreter and the workspace visible), else ``uid`` when running as root (the
    code runs as ``user``), else ``none`` with a warning naming what is lost. Naming one
    makes it a requirement: a worker refuses to start without it."""
    user: str = "nobody"
    """The unprivileged user (and its group) the ``uid`` isolation runs code as."""


class HttpSettings(_Config, frozen=True, kw_only=True):
    """The daemon's HTTP server: ``/metrics`` and the dashboard (``supervisor/web.py``)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    """Loopback by default: the dashboard is reachable from this machine only."""
    port: int = 8480
    """0 picks a free one; ``warden up`` prints the URL either way."""


class MetricsSettings(_Config, frozen=True, kw_only=True):
    """Prometheus metrics on the HTTP server's ``/metrics`` (``supervisor/metrics.py``)."""

    enabled: bool = True
    """Off: no metrics observer on the event stream and no ``/metrics`` route."""
    scrape_timeout_s: float = 0.5
    """How long a scrape waits for the intake consumer's info from JetStream (its queue
    depth and lag); past it those gauges are left out of that scrape."""


class AnomalySettings(_Config, frozen=True, kw_only=True):
    """Anomaly flags on ended runs (``supervisor/anomaly.py``).

    A run is compared with the last ``baseline_runs`` ended runs of its kind (the same
    sequence of roles in its plan). A measure is flagged when it is above both
    ``median + mad_k * MAD`` and ``median_ratio * median`` of that baseline, and only once
    the baseline holds ``min_baseline_runs`` runs.
    """

    enabled: bool = True
    baseline_runs: int = 20
    min_baseline_runs: int = 5
    mad_k: float = 5.0
    median_ratio: float = 2.0
    min_retries: int = 2
    """Retries are flagged only from this many on (a baseline of none makes any retry
    look far above it)."""
    min_duration_s: float = 1.0
    """Durations are flagged only from this many seconds on (a baseline of fast runs
    makes any jitter look far above it)."""
    repeat_threshold: int = 3
    """A sequence of 2 or more tool names repeated back to back this many times in one
    step is flagged (``repeated_tool_sequence``); 0 turns it off."""
    max_pattern_length: int = 4
    """The longest tool sequence looked for."""
    cross_step_repeats: int = 3
    """The same tool with the same arguments called in this many steps is flagged
    (``repeated_tool_call``); 0 turns it off."""


class TracingSettings(_Config, frozen=True, kw_only=True):
    """OpenTelemetry traces of runs (``actors/tracing.py``; README, "Tracing").

    The exporter (OTLP over HTTP, protobuf) is configured by the standard ``OTEL_*``
    variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``..._HEADERS``, ``OTEL_SERVICE_NAME``, ...).
    """

    enabled: bool = False
    """Export traces. Also on, without this, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; always off with
    ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``."""
    capture_content: bool = False
    """Put prompts, replies, tool arguments and tool output on the spans
    (``gen_ai.input.messages``, ...). Off: spans carry names, counts and timings only."""


class Settings(_Config, frozen=True, kw_only=True):
    data_dir: str = ".warden"
    """Journal, workspaces, the embedded server's store and its URL file live here."""
    local_workers: bool = True
    """Run every role's workers inside the daemon. ``false`` when ``warden worker``
    processes (on this machine or others) serve the roles instead."""
    nats: NatsSettings = NatsSettings()
    models: ModelSettings = ModelSettings()
    pricing: PricingSettings
    roles: dict[str, RoleSettings]
    limits: LimitSettings = LimitSettings()
    breaker: BreakerSettings = BreakerSettings()
    supervision: SupervisionSettings = SupervisionSettings()
    intake: IntakeSettings = IntakeSettings()
    sandbox: SandboxSettings = SandboxSettings()
    tools: dict[str, ToolSettings] = {}
    """The user's own tools by name; roles pick them by name like warden's."""
    policy: PolicySettings = PolicySettings()
    """The guards on every tool call (``config/policy.py``)."""
    mcp: McpSettings = McpSettings()
    """MCP servers whose tools roles may use (``config/mcp.py``)."""
    approvals: ApprovalSettings = ApprovalSettings()
    http: HttpSettings = HttpSettings()
    metrics: MetricsSettings = MetricsSettings()
    anomaly: AnomalySettings = AnomalySettings()
    """Approvals of risky tool calls: expiry and what a denial does."""
    tracing: TracingSettings = TracingSettings()
    """OpenTelemetry traces of runs: off unless enabled (README, "Tracing")."""
    rate_limits: RateLimitSettings = RateLimitSettings()
    """Requests and tokens per minute per model and per tenant (README, "Rate limits")."""
    budgets: BudgetSettings = BudgetSettings()
    """Day, tenant, run and step budgets (README, "Budgets")."""
