"""Circuit breakers: stop calling a dependency that keeps failing, then probe it.

The states::

    closed ──(failure_threshold consecutive failures)──> open
    open ──(cooldown elapsed)──> half_open
    half_open ──(half_open_probes successes)──> closed
    half_open ──(a probe fails)──> open

- ``closed``: calls go through; a success resets the count of consecutive failures.
- ``open``: calls fail fast with ``BreakerOpenError`` (``retry_after`` = time left of
  the cooldown); the calling code is not run.
- ``half_open``: ``half_open_probes`` calls are let through as probes; further calls
  fail fast. A probe cancelled before it finished is neither a success nor a failure:
  it frees its slot for another probe.

Results are matched to the state a call was let through in: a call that started while
``closed`` and fails after the breaker opened does not count again, and a late result
cannot close a breaker it did not probe (``guard`` tracks this; ``record_*`` called by
hand apply to the current state). Time comes from ``clock`` (``anyio.current_time`` by
default), so tests pass a fake clock instead of sleeping (``tests/supervisor/test_breaker.py``).
State changes are logged as ``breaker_opened``, ``breaker_half_opened``,
``breaker_closed``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio
import structlog
from warden.supervisor.errors import BreakerOpenError

if TYPE_CHECKING:
    from warden.config import BreakerSettings

BreakerState = Literal["closed", "open", "half_open"]

log = structlog.get_logger("warden.breaker")


@dataclass(frozen=True, slots=True)
class BreakerStatistics:
    """A snapshot of a breaker, from ``CircuitBreaker.statistics()``."""

    name: str
    state: BreakerState
    consecutive_failures: int
    probes_in_flight: int
    probe_successes: int
    times_opened: int
    calls_rejected: int


class CircuitBreaker:
    """A circuit breaker over one dependency (a model endpoint, a tool)."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        cooldown: float,
        half_open_probes: int = 1,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        if failure_threshold < 1 or half_open_probes < 1 or cooldown < 0:
            raise ValueError(
                f"breaker {name!r}: need failure_threshold >= 1, half_open_probes >= 1 and "
                f"cooldown >= 0, got {failure_threshold!r}, {half_open_probes!r}, {cooldown!r}"
            )
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.half_open_probes = half_open_probes
        self._clock = clock
        self._state: BreakerState = "closed"
        self._epoch = 0  # bumped on every state change; results of older epochs are stale
        self._failures = 0
        self._opened_at = 0.0
        self._probes_in_flight = 0
        self._probe_successes = 0
        self._times_opened = 0
        self._rejected = 0

    @classmethod
    def from_settings(
        cls,
        name: str,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = anyio.current_time,
    ) -> CircuitBreaker:
        """A breaker with the thresholds of a ``[breaker]`` settings table."""
        return cls(
            name,
            failure_threshold=settings.failure_threshold,
            cooldown=settings.cooldown_s,
            half_open_probes=settings.half_open_probes,
            clock=clock,
        )

    @property
    def state(self) -> BreakerState:
        """The current state; reading it moves ``open`` to ``half_open`` after the cooldown."""
        if self._state == "open" and self._clock() >= self._opened_at + self.cooldown:
            self._change("half_open")
        return self._state

    def acquire(self) -> None:
        """Let one call through, or raise ``BreakerOpenError`` to fail fast.

        Does not block. In ``half_open`` the call takes a probe slot: report its outcome
        with ``record_success``/``record_failure`` (or use ``guard``, which does).
        """
        self._acquire()

    def record_success(self) -> None:
        """Report that a call let through succeeded."""
        self._settle(self._epoch, ok=True)

    def record_failure(self) -> None:
        """Report that a call let through failed."""
        self._settle(self._epoch, ok=False)

    def release(self) -> None:
        """Report that a call let through ended with no verdict on the dependency (it was
        cancelled, or the connection to it dropped): frees its probe slot, counts nothing."""
        self._settle(self._epoch, ok=None)

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Run the block as one call through the breaker.

        Raises ``BreakerOpenError`` on entry when failing fast (the block does not run).
        An exception out of the block is a failure; a normal exit a success;
        cancellation (or any other ``BaseException``) neither: it frees a probe slot.
        Not a cancellation point itself.
        """
        epoch = self._acquire()
        try:
            yield
        except Exception:
            self._settle(epoch, ok=False)
            raise
        except BaseException:
            self._settle(epoch, ok=None)
            raise
        self._settle(epoch, ok=True)

    def statistics(self) -> BreakerStatistics:
        """A frozen snapshot. Does not block."""
        return BreakerStatistics(
            name=self.name,
            state=self.state,
            consecutive_failures=self._failures,
            probes_in_flight=self._probes_in_flight,
            probe_successes=self._probe_successes,
            times_opened=self._times_opened,
            calls_rejected=self._rejected,
        )

    # -- internals ---------------------------------------------------------------------

    def _acquire(self) -> int:
        state = self.state
        if state == "open":
            self._rejected += 1
            retry_after = max(0.0, self._opened_at + self.cooldown - self._clock())
            raise BreakerOpenError(self.name, retry_after)
        if state == "half_open":
            if self._probes_in_flight + self._probe_successes >= self.half_open_probes:
                # Every probe slot is taken; whether the breaker closes or reopens is up
                # to the probes in flight, so the cooldown is an honest upper bound.
                self._rejected += 1
                raise BreakerOpenError(self.name, self.cooldown)
            self._probes_in_flight += 1
        return self._epoch

    def _settle(self, epoch: int, *, ok: bool | None) -> None:
        """Record the outcome of a call let through in ``epoch``; None means cancelled."""
        if epoch != self._epoch:
            return  # the breaker changed state since: this result belongs to the past
        if self._state == "closed":
            if ok is True:
                self._failures = 0
            elif ok is False:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._change("open")
        elif self._state == "half_open":
            self._probes_in_flight = max(0, self._probes_in_flight - 1)
            if ok is True:
                self._probe_successes += 1
                if self._probe_successes >= self.half_open_probes:
                    self._change("closed")
            elif ok is False:
                self._failures += 1
                self._change("open")
        # open: nothing was let through in this epoch, so there is nothing to record

    def _change(self, state: BreakerState) -> None:
        self._state = state
        self._epoch += 1
        self._probes_in_flight = 0
        self._probe_successes = 0
        if state == "open":
            self._opened_at = self._clock()
            self._times_opened += 1
            log.warning("breaker_opened", breaker=self.name, failures=self._failures)
        elif state == "half_open":
            log.info("breaker_half_opened", breaker=self.name, failures=self._failures)
        else:
            log.info("breaker_closed", breaker=self.name, failures=self._failures)
            self._failures = 0
