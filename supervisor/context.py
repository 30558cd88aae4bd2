"""``RunContext``: what every run supervisor (and its call gate) of a daemon shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
from warden.actors.pricing import PriceTable
from warden.actors.tools import ToolRegistry
from warden.bus.wire import ToolSpec, encoder
from warden.config import Settings
from warden.supervisor.breaker import CircuitBreaker
from warden.supervisor.dispatch import Dispatcher
from warden.supervisor.events import EventStream, JournalObserver
from warden.supervisor.journal import Journal
from warden.supervisor.rate_limit import RateLimiter

if TYPE_CHECKING:
    from warden.supervisor.approvals import ApprovalBoard
    from warden.supervisor.interceptors import Interceptor
    from warden.supervisor.spend import DailySpend

__all__ = ("RunContext",)


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """Shared by the runs of one daemon; built once at start-up.

    ``breakers`` holds one breaker per worker role (does a worker answer?);
    ``model_breakers`` one per model endpoint, made on first use (does the model?).
    ``tool_specs`` is each role's tool schemas, built from the parent's registry and
    the role's allowlist: part of every step's model request.
    """

    settings: Settings
    journal: Journal
    dispatcher: Dispatcher
    prices: PriceTable
    tools: ToolRegistry
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    model_breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    model_faults: dict[str, str] = field(default_factory=dict)
    """The last failure of each model endpoint: what an open breaker's refusal names."""
    events: EventStream
    """The one stream of run events: every status change and every event of a run."""
    interceptors: Sequence[Interceptor] = ()
    tool_specs: dict[str, list[ToolSpec]] = field(default_factory=dict)
    tool_specs_json: dict[str, msgspec.Raw] = field(default_factory=dict)
    """``tool_specs`` encoded once per role, as a ``TurnRequest`` carries them."""
    approvals: ApprovalBoard | None = None
    """The daemon's approval requests and decisions: what a step whose answer is not
    confident enough waits on (``run.py``); ``None``: such a step needs a human at once."""
    rate_limiter: RateLimiter
    """The daemon's rate limits (``rate_limit.py``), shared by every run's model calls."""
    spend: DailySpend | None = None
    """The day and tenant budget levels every run shares (``spend.py``); ``None``: runs
    have their run and step levels only."""

    @classmethod
    def build(
        cls, settings: Settings, journal: Journal, dispatcher: Dispatcher, tools: ToolRegistry,
        *, events: EventStream | None = None, interceptors: Sequence[Interceptor] = (),
        approvals: ApprovalBoard | None = None, spend: DailySpend | None = None,
    ) -> RunContext:
        """The context the settings describe: prices, a breaker per role, tool specs, the
        rate limiter.
        Without ``events``, a stream whose one observer is the journal's events table."""
        specs = {role: tools.specs(spec.tools) for role, spec in settings.roles.items()}
        return cls(
            settings=settings, journal=journal, dispatcher=dispatcher,
            prices=PriceTable(settings.pricing), tools=tools,
            breakers={role: CircuitBreaker.from_settings(f"worker.{role}", settings.breaker)
                      for role in settings.roles},
            events=events or EventStream(journal, (JournalObserver(journal),)),
            interceptors=tuple(interceptors),
            tool_specs=specs,
            tool_specs_json={role: msgspec.Raw(encoder.encode(s)) for role, s in specs.items()},
            approvals=approvals,
            rate_limiter=RateLimiter(
                settings.rate_limits, patience_s=settings.models.patience_s,
                retry_after_cap_s=settings.models.retry_after_cap_s),
            spend=spend,
        )
