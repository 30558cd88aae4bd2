"""Prometheus metrics: an observer of the event stream, and gauges read at scrape time.

The contract:

- **One registry per daemon** (``Metrics.registry``), never the process's default one:
  tests run several daemons in one process. Served as ``GET /metrics`` on the daemon's
  HTTP server (``metrics_routes``), in Prometheus' text format.
- **Names** are Prometheus': the ``warden_`` prefix, base units (seconds, USD, tokens),
  counters end in ``_total``. The list is in the README ("Metrics") and in ``METRIC_NAMES``.
- **Bounded labels.** Never a run id. ``status`` is a ``RunStatus``; ``role``, ``model``
  and ``tool`` come from the configuration (a tool name the registry does not know, as a
  model may ask for anything, is counted as ``other``); ``rule``, ``decision``,
  ``outcome``, ``type`` and ``kind`` are fixed vocabularies.
- **Cheap on the hot path.** A model or tool call costs a dict lookup of its pre-bound
  label children, then a few plain additions (``metric_types.py``: no lock, no dict of
  labels per event; prometheus_client only formats them at scrape). Without
  ``[metrics] enabled`` there is no observer at all, so the call events are not built
  (``EventStream.wants``).
- **Scrape-time state** (not events): active runs, approvals pending and the age of the
  oldest (journal), breaker states (``daemon.breakers`` and the model breakers), the rate
  limiter's limit and waiting calls per model endpoint, the intake backlog (JetStream
  consumer info, bounded by ``metrics.scrape_timeout_s``). A part that cannot be read is
  left out of that scrape (logged), never failing it.

Policy decisions are counted from the tool-call events: ``decided_by`` names the guard
that denied or substituted a call (``blocked_pattern``, ``magnitude``, ``loop``,
``approval``, ``dry_run``); a call the gate refused before any guard (not in the role's
allowlist, or an unknown tool) is ``allowlist``; an approval wait is ``approval`` /
``pause``. The arguments' schema is checked by the worker where the tool runs, so a call
refused by its schema is a tool call with outcome ``error``, not a policy decision.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import anyio
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from warden.supervisor.anomaly import ANOMALY_KINDS, Flag
from warden.supervisor.approvals import ApprovalGuard
from warden.supervisor.dry_run import DryRunGuard
from warden.supervisor.events import (
    Event,
    EventKind,
    ModelCallMade,
    RunCreated,
    StatusChanged,
    StepFinished,
    StepRetry,
    StepSkipped,
    StepStarted,
    ToolCallMade,
)
from warden.supervisor.metric_types import Bins, Cell, LoopCounter, LoopHistogram
from warden.supervisor.policy import BlockedPatternGuard, LoopGuard, MagnitudeGuard
from warden.supervisor.run_states import STATUSES, TERMINAL

if TYPE_CHECKING:
    from warden.supervisor.daemon import Daemon

__all__ = ("METRIC_NAMES", "Metrics", "metrics_routes")

log = structlog.get_logger("warden.metrics")

RUN_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 450.0,
               600.0, 900.0, 1200.0, 1800.0, 3600.0)
"""Seconds: runs last seconds to an hour; dense around a minute, where p95/p99 fall."""
STEP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0,
                120.0)
"""Seconds of one model call: tens of milliseconds (cached, local) to minutes."""

_GUARD_RULES: dict[str, str] = {
    BlockedPatternGuard.name: "blocked_pattern",
    MagnitudeGuard.name: "magnitude",
    LoopGuard.name: "loop",
    ApprovalGuard.name: "approval",
    DryRunGuard.name: "dry_run",
}
"""Interceptor names (``decided_by``) → the ``rule`` label."""
OTHER = "other"

METRIC_NAMES: tuple[str, ...] = (
    "warden_runs_started_total", "warden_runs_ended_total", "warden_runs_active",
    "warden_approval_waits_total", "warden_run_duration_seconds",
    "warden_step_duration_seconds", "warden_step_retries_total",
    "warden_model_call_duration_seconds", "warden_model_tokens_total",
    "warden_model_cost_usd_total", "warden_model_fallbacks_total", "warden_tool_calls_total",
    "warden_policy_decisions_total", "warden_anomalies_total",
    "warden_approvals_pending", "warden_approvals_oldest_age_seconds",
    "warden_breaker_state", "warden_intake_queue_depth", "warden_intake_in_flight",
    "warden_intake_lag_seconds", "warden_rate_limit_rpm", "warden_rate_limit_waiting",
)
"""Every metric family ``/metrics`` exposes, by its sample name (a counter's with
``_total``; a histogram's samples add ``_bucket``, ``_sum`` and ``_count``)."""

_ModelChildren = tuple[Bins, Cell, Cell, Cell, Cell, Cell]
_ToolChildren = tuple[Cell, Cell | None]


class Metrics:
    """The metrics of one daemon: its registry, its event observer and its scrape.

    Counted on the event loop's thread only (``metric_types.py``): observe and scrape
    there, never from another thread.
    """

    def __init__(self, *, tools: Iterable[str] = (), roles: Iterable[str] = ()) -> None:
        self._known_tools = frozenset(tools)
        self._known_roles = frozenset(roles)
        self.runs_started = LoopCounter("warden_runs_started", "Runs committed to the queue.")
        self.runs_ended = LoopCounter(
            "warden_runs_ended", "Runs that reached a terminal status (rejected at intake "
            "included), by status.", ["status"])
        self.approval_waits = LoopCounter(
            "warden_approval_waits", "Times a run went to awaiting_approval (escalations to "
            "a person; needs_human endings are in runs_ended).")
        self.run_duration = LoopHistogram(
            "warden_run_duration_seconds", "Seconds from submission to the run's end, for "
            "runs submitted to this daemon process, by status.", ["status"], RUN_BUCKETS)
        self.step_duration = LoopHistogram(
            "warden_step_duration_seconds", "Seconds of one step attempt, by role and "
            "outcome (finished, retried).", ["role", "outcome"], STEP_BUCKETS)
        self.step_retries = LoopCounter("warden_step_retries", "Step attempts that failed "
                                        "and were retried, by role.", ["role"])
        self.model_duration = LoopHistogram(
            "warden_model_call_duration_seconds", "Seconds of one model call, by model and "
            "purpose.", ["model", "purpose"], CALL_BUCKETS)
        self.tokens = LoopCounter(
            "warden_model_tokens", "Tokens of model calls, by model and type (input: "
            "uncached input; output; cache_read; cache_write).", ["model", "type"])
        self.cost = LoopCounter("warden_model_cost_usd", "US dollars spent on model calls, "
                                "by model.", ["model"])
        self.fallbacks = LoopCounter(
            "warden_model_fallbacks", "Model calls served further down their chain, by the "
            "model that served and why (overloaded, breaker_open, budget).",
            ["model", "reason"])
        self.tool_calls = LoopCounter(
            "warden_tool_calls", "Tool calls by tool and outcome (ok, error, denied, "
            "substituted, refused).", ["tool", "outcome"])
        self.policy = LoopCounter(
            "warden_policy_decisions", "Calls a policy guard decided, by rule and decision "
            "(deny, substitute, pause).", ["rule", "decision"])
        self.anomalies = LoopCounter("warden_anomalies", "Anomaly flags on ended runs, by "
                                     "kind.", ["kind"])
        self._started = self.runs_started.labels()
        self._waits = self.approval_waits.labels()
        # Present from the start, at zero: rate() and increase() need the first sample.
        self._ended = {status: self.runs_ended.labels(status) for status in STATUSES
                       if status in TERMINAL}
        for kind in ANOMALY_KINDS:
            self.anomalies.labels(kind)
        self._run_duration = {status: self.run_duration.labels(status) for status in STATUSES}
        self._families: tuple[LoopCounter | LoopHistogram, ...] = (
            self.runs_started, self.runs_ended, self.approval_waits, self.run_duration,
            self.step_duration, self.step_retries, self.model_duration, self.tokens,
            self.cost, self.fallbacks, self.tool_calls, self.policy, self.anomalies,
        )
        self._scraped: Sequence[Metric] = ()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._models: dict[tuple[str, str], _ModelChildren] = {}
        self._tools: dict[tuple[str, bool, str | None, bool], _ToolChildren] = {}
        self._steps: dict[tuple[str, str], Bins] = {}
        self._runs: dict[str, tuple[float | None, str]] = {}
        """Each live run seen: when it was submitted (``None``: before this process) and
        its last status."""
        self._step_started: dict[str, dict[int, float]] = {}
        """When each live run's running step attempts started, by run and step."""
        self._handlers: dict[type, Callable[[Event], None]] = {
            RunCreated: self._created, StatusChanged: self._status,  # type: ignore[dict-item]
            StepStarted: self._step_start, StepFinished: self._step_end,  # type: ignore[dict-item]
            StepRetry: self._step_end, StepSkipped: self._step_skip,  # type: ignore[dict-item]
            ModelCallMade: self._model_call, ToolCallMade: self._tool_call,  # type: ignore[dict-item]
        }

    # -- the collector (prometheus_client asks it at each scrape) -------------------------

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield family.collect()
        yield from self._scraped

    # -- the observer -------------------------------------------------------------------

    def takes(self, kind: EventKind) -> bool:
        return kind not in ("plan_invalid", "turn")

    async def observe(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def flagged(self, flag: Flag) -> None:
        """Count one anomaly flag (``AnomalyWatch.on_flag``)."""
        self.anomalies.labels(flag.kind).value += 1

    def _created(self, event: RunCreated) -> None:
        if event.status == "rejected":
            self._ended["rejected"].value += 1
            return
        self._started.value += 1
        self._runs[event.run_id] = (time.monotonic(), event.status)

    def _status(self, event: StatusChanged) -> None:
        run_id, status = event.run_id, event.status
        started, before = self._runs.get(run_id, (None, ""))
        if status in TERMINAL:
            self._runs.pop(run_id, None)
            self._ended[status].value += 1
            if started is not None:
                self._run_duration[status].observe(time.monotonic() - started)
            self._step_started.pop(run_id, None)
            return
        if status == "awaiting_approval" and before != "awaiting_approval":
            self._waits.value += 1
            self.policy.labels("approval", "pause").value += 1
        self._runs[run_id] = (started, status)

    def _step_start(self, event: StepStarted) -> None:
        self._step_started.setdefault(event.run_id, {})[event.step] = time.monotonic()

    def _step_end(self, event: StepFinished | StepRetry) -> None:
        steps = self._step_started.get(event.run_id)
        started = None if steps is None else steps.pop(event.step, None)
        retried = isinstance(event, StepRetry)
        role = event.role if event.role in self._known_roles else OTHER
        if retried:
            self.step_retries.labels(role).value += 1
        if started is None:
            return
        outcome = "retried" if retried else "finished"
        child = self._steps.get((role, outcome))
        if child is None:
            child = self._steps[(role, outcome)] = self.step_duration.labels(role, outcome)
        child.observe(time.monotonic() - started)

    def _step_skip(self, event: StepSkipped) -> None:
        steps = self._step_started.get(event.run_id)
        if steps is not None:
            steps.pop(event.step, None)

    def _model_call(self, event: ModelCallMade) -> None:
        children = self._models.get((event.model, event.purpose))
        if children is None:
            children = self._bind_model(event.model, event.purpose)
        duration, input_, output, cache_read, cache_write, cost = children
        duration.observe(event.latency_ms / 1000.0)
        usage = event.usage
        input_.value += usage.input_tokens
        output.value += usage.output_tokens
        cache_read.value += usage.cache_read_input_tokens
        cache_write.value += usage.cache_creation_input_tokens
        cost.value += event.call_cost_usd
        if event.fallback is not None:
            self.fallbacks.labels(event.model, event.fallback).value += 1

    def _bind_model(self, model: str, purpose: str) -> _ModelChildren:
        tokens = self.tokens
        children = (
            self.model_duration.labels(model, purpose),
            tokens.labels(model, "input"), tokens.labels(model, "output"),
            tokens.labels(model, "cache_read"), tokens.labels(model, "cache_write"),
            self.cost.labels(model),
        )
        self._models[(model, purpose)] = children
        return children

    def _tool_call(self, event: ToolCallMade) -> None:
        # duration_ms == 0.0 and no decider: the gate refused it (allowlist, unknown tool).
        key = (event.name, event.ok, event.decided_by, event.duration_ms == 0.0)
        children = self._tools.get(key)
        if children is None:
            children = self._bind_tool(*key)
        calls, decision = children
        calls.value += 1
        if decision is not None:
            decision.value += 1

    def _bind_tool(self, name: str, ok: bool, by: str | None, instant: bool) -> _ToolChildren:
        tool = name if name in self._known_tools else OTHER
        decision: Cell | None = None
        if by is not None:
            outcome = "substituted" if ok else "denied"
            decision = self.policy.labels(_GUARD_RULES.get(by, OTHER),
                                          "substitute" if ok else "deny")
        elif not ok and instant:
            outcome = "refused"
            decision = self.policy.labels("allowlist", "deny")
        else:
            outcome = "ok" if ok else "error"
        children = (self.tool_calls.labels(tool, outcome), decision)
        if tool != OTHER:  # unknown names are not kept: a model could send endless ones
            self._tools[(name, ok, by, instant)] = children
        return children

    # -- the scrape ---------------------------------------------------------------------

    async def scrape(self, daemon: Daemon) -> bytes:
        """The text exposition of every metric, the scrape-time gauges read now.

        A cancellation point. Never raises for a part it cannot read: that part is left
        out (logged as ``metrics_scrape_partial``).
        """
        families: list[Metric] = [_gauge("warden_runs_active", "Runs with a supervisor now.",
                                         daemon.active_runs)]
        families.extend(_breakers(daemon))
        families.extend(_rate_limits(daemon))
        families.extend(await _approvals(daemon))
        families.extend(await _intake(daemon))
        self._scraped = families  # nothing awaits from here: two scrapes cannot mix
        return generate_latest(self.registry)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _breakers(daemon: Daemon) -> list[Metric]:
    family = GaugeMetricFamily(
        "warden_breaker_state", "1 for each breaker's current state (closed, open, "
        "half_open), 0 for the others; worker.<role> and each model endpoint.",
        labels=["breaker", "state"])
    breakers = [*daemon.breakers.values(), *daemon.context.model_breakers.values()]
    for breaker in breakers:
        for state in ("closed", "open", "half_open"):
            family.add_metric([breaker.name, state], 1.0 if breaker.state == state else 0.0)
    return [family]


def _rate_limits(daemon: Daemon) -> list[Metric]:
    """The rate limiter's state per model endpoint seen (README, "Rate limits")."""
    limit = GaugeMetricFamily(
        "warden_rate_limit_rpm", "The request limit in force per model endpoint, per "
        "minute (configured, or lowered by a 429); 0: none.", labels=["model"])
    waiting = GaugeMetricFamily(
        "warden_rate_limit_waiting", "Model calls waiting for rate-limit capacity.",
        labels=["model"])
    for endpoint in daemon.context.rate_limiter.statistics():
        limit.add_metric([endpoint.model], endpoint.limit_rpm or 0.0)
        waiting.add_metric([endpoint.model], float(endpoint.waiting))
    return [limit, waiting]


async def _approvals(daemon: Daemon) -> list[Metric]:
    try:
        pending = await daemon.journal.approvals(status="pending", live_only=True,
                                                 limit=100_000)
    except Exception as exc:
        log.warning("metrics_scrape_partial", part="approvals", error=repr(exc))
        return []
    oldest = min((p.created_at for p in pending), default=None)
    return [
        _gauge("warden_approvals_pending", "Approval requests of live runs awaiting a "
               "decision.", len(pending)),
        _gauge("warden_approvals_oldest_age_seconds", "Age of the oldest pending approval "
               "request (0 when none).", 0.0 if oldest is None else max(0.0, time.time() - oldest)),
    ]


async def _intake(daemon: Daemon) -> list[Metric]:
    timeout = daemon.settings.metrics.scrape_timeout_s
    try:
        with anyio.fail_after(timeout):
            queue = await daemon.bus.task_queue(timeout=timeout)
    except Exception as exc:  # a timeout, no stream yet, NATS away: not this scrape
        log.warning("metrics_scrape_partial", part="intake", error=repr(exc))
        return []
    return [
        _gauge("warden_intake_queue_depth", "Submitted tasks not yet delivered to intake.",
               queue.pending),
        _gauge("warden_intake_in_flight", "Tasks delivered to intake, not yet acknowledged.",
               queue.in_flight),
        _gauge("warden_intake_lag_seconds", "Age of the oldest task not yet acknowledged "
               "(0 when none).", queue.oldest_age_s),
    ]


def metrics_routes(daemon: Daemon) -> list[BaseRoute]:
    """``GET /metrics`` when the daemon has metrics (``[metrics] enabled``), else none."""
    metrics = daemon.metrics
    if metrics is None:
        return []

    async def serve(_request: Request) -> Response:
        return Response(await metrics.scrape(daemon), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return [Route("/metrics", serve, methods=["GET"])]
