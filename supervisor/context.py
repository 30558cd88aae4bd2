"""``RunContext``: what every run supervisor (and its call gate) of a daemon shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from warden.actors.pricing import PriceTable
from warden.actors.tools import ToolRegistry
from warden.bus.connection import Bus
from warden.bus.wire import ToolSpec
from warden.config import Settings
from warden.supervisor.breaker import CircuitBreaker
from warden.supervisor.dispatch import Dispatcher
from warden.supervisor.journal import Journal

if TYPE_CHECKING:
    from warden.supervisor.gate import CallObserver, Interceptor

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
    interceptors: Sequence[Interceptor] = ()
    observers: Sequence[CallObserver] = ()
    tool_specs: dict[str, list[ToolSpec]] = field(default_factory=dict)
    bus: Bus | None = None
    """Where the run's events are published; ``None`` publishes none (unit tests)."""

    @classmethod
    def build(
        cls, settings: Settings, journal: Journal, dispatcher: Dispatcher, tools: ToolRegistry,
        *, bus: Bus | None = None, interceptors: Sequence[Interceptor] = (),
        observers: Sequence[CallObserver] = (),
    ) -> RunContext:
        """The context the settings describe: prices, a breaker per role, tool specs."""
        return cls(
            settings=settings, journal=journal, dispatcher=dispatcher,
            prices=PriceTable(settings.pricing), tools=tools,
            breakers={role: CircuitBreaker.from_settings(f"worker.{role}", settings.breaker)
                      for role in settings.roles},
            interceptors=tuple(interceptors), observers=tuple(observers),
            tool_specs={role: tools.specs(spec.tools) for role, spec in settings.roles.items()},
            bus=bus,
        )
