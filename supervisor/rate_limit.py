"""The rate limiter: one per daemon (``RunContext.rate_limiter``), shared by every run.

The spec (README, "Rate limits"; settings ``[rate_limits]``, ``config/rate_limits.py``):

1. **Buckets.** Requests per minute (rpm) and tokens per minute (tpm), per model endpoint
   (the model name, ``[rate_limits.models."<model>"]``) and per tenant (``tenant_rpm``,
   ``tenant_tpm``: each tenant its own buckets, over all its runs and models); 0 is no
   limit. A bucket refills continuously at its rate and holds at most ``window_s``'s
   allowance (at least one request), the burst it lets through at once.
2. **Cost.** A model call takes one request and, where a token limit applies, its
   estimate (the prompt's ``PriceTable.estimate_prompt_tokens`` plus ``max_tokens``: the
   tokens the budget reserved, which the gate hands over) before it is sent
   (``acquire``); after the reply (``settle``), the estimate is replaced by the reply's
   usage (a refused call used none). A call bigger than a bucket waits for a full bucket
   and takes it into debt.
3. **Waiting.** A call that finds no capacity waits, without failing, behind the calls
   already waiting on its endpoint (none overtakes). Waiting calls are served **fairly**:
   round-robin over the tenants with waiters, then over the runs of a tenant, FIFO within
   a run. A tenant at its own limit is skipped, not waited for. A call waits at most
   ``max_wait_s`` in all (``ModelCallFailedError`` past it, naming the limit; a wait
   that could not end in time fails at once).
4. **AIMD on 429.** A reply with ``status == 429`` that is ``retryable`` lowers the
   endpoint's request limit to ``aimd_decrease`` times the one in force (without one,
   the rate observed over the last ``window_s``), never below ``aimd_min_rpm``, and
   empties its bucket; a 429 to a request sent before the last decrease does not lower
   it again (one decrease per round). Its ``retry-after`` (capped at
   ``models.retry_after_cap_s``) pauses the endpoint. Each success then adds
   ``aimd_increase_rpm`` back, up to the configured limit; without one, up to the rate it
   was lowered from, where the limit is lifted.
5. **A 429 is a rate signal, not an outage.** ``settle`` answers ``True`` and the gate
   sends the call again through ``acquire``: not an attempt of ``models.attempts``, not a
   failure of the model's breaker. Bounded: from its first 429 a call waits at most
   ``models.patience_s`` more, then fails with the 429's error. A 429 that no retry
   repairs (the spend cap: not ``retryable``) is not the limiter's: the gate fails it.
6. **Off costs next to nothing.** With no limit in force on an endpoint and none per
   tenant, ``acquire`` reads the clock and notes the send time (the observed rate a
   first 429 starts from), and ``settle`` compares two fields.

Times come from ``clock`` (``time.monotonic``: a third of the cost of
``anyio.current_time``, and the limiter only ever compares its own readings and sleeps
for their differences), so the rules above are tested on a fake clock
(``tests/supervisor/test_rate_limit.py``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio
import structlog
from warden.supervisor.errors import ModelCallFailedError

if TYPE_CHECKING:
    from warden.bus.wire import TurnReply
    from warden.config.rate_limits import RateLimitSettings
    from warden.supervisor.interceptors import ModelCall

__all__ = ("EndpointStatistics", "FairQueue", "Permit", "RateLimiter", "TokenBucket")

log = structlog.get_logger("warden.rate_limit")

_MINUTE = 60.0
T = TypeVar("T")


@dataclass(slots=True)
class TokenBucket:
    """``rate`` units a second, at most ``capacity``; ``level`` may go below 0 (debt)."""

    rate: float
    capacity: float
    level: float
    updated: float

    @classmethod
    def per_minute(cls, per_minute: float, window_s: float, now: float) -> TokenBucket:
        """A full bucket of ``per_minute``, holding ``window_s``'s allowance (at least 1)."""
        rate = per_minute / _MINUTE
        capacity = max(1.0, rate * window_s)
        return cls(rate=rate, capacity=capacity, level=capacity, updated=now)

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def ready_at(self, amount: float, now: float) -> float:
        """When ``amount`` (at most a full bucket) can be taken: ``now`` if it can."""
        self.refill(now)
        need = min(amount, self.capacity)
        if self.level >= need:
            return now
        return max(now, self.updated) + (need - self.level) / self.rate

    def give_back(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)


class FairQueue(Generic[T]):
    """Items waiting by tenant, then by run: served round-robin over the tenants, then
    over the runs of a tenant, FIFO within a run. Pure; never blocks."""

    def __init__(self) -> None:
        self._tenants: dict[str, dict[str, deque[T]]] = {}  # dict order: the turn order

    def __len__(self) -> int:
        return sum(len(q) for runs in self._tenants.values() for q in runs.values())

    def __bool__(self) -> bool:
        return bool(self._tenants)

    def push(self, tenant: str, run_id: str, item: T) -> None:
        """Queue ``item`` last of its run (a new tenant or run comes last in the turns)."""
        self._tenants.setdefault(tenant, {}).setdefault(run_id, deque()).append(item)

    def heads(self) -> Iterator[tuple[str, T]]:
        """``(tenant, item)``: each tenant's next item (of its run whose turn it is), the
        tenants in turn order. Do not ``push`` or ``pop`` while iterating."""
        for tenant, runs in self._tenants.items():
            yield tenant, next(iter(runs.values()))[0]

    def pop(self, tenant: str) -> T:
        """Take ``tenant``'s next item; its run goes last of its runs, it last of the
        tenants. Raises ``KeyError`` when the tenant waits for nothing."""
        runs = self._tenants.pop(tenant)
        run_id, queue = next(iter(runs.items()))
        item = queue.popleft()
        del runs[run_id]
        if queue:
            runs[run_id] = queue
        if runs:
            self._tenants[tenant] = runs
        return item

    def remove(self, tenant: str, run_id: str, item: T) -> None:
        """Take ``item`` out wherever it is; the turn order is unchanged. Idempotent."""
        runs = self._tenants.get(tenant, {})
        queue = runs.get(run_id)
        if queue is None or item not in queue:
            return
        queue.remove(item)
        if not queue:
            del runs[run_id]
        if not runs:
            del self._tenants[tenant]


@dataclass(slots=True, eq=False)
class Permit:
    """One model call's passage through the limiter, kept across its sends (``after``)."""

    model: str
    tenant: str
    tokens: float = 0.0
    """Tokens taken for the send in flight (0 when no token limit applies)."""
    sent_at: float = -math.inf
    deadline: float = math.inf
    """When the call stops waiting: ``max_wait_s`` from its first wait, at most
    ``patience_s`` from its first 429."""
    problem: str = ""
    """The last 429's error, what a call failing past its deadline names."""


@dataclass(frozen=True, slots=True)
class EndpointStatistics:
    """Where one model endpoint stands (``RateLimiter.statistics``)."""

    model: str
    limit_rpm: float | None
    """The request limit in force (configured or lowered by a 429); ``None``: none."""
    observed_rpm: float
    """Requests per minute sent over the last window."""
    paused_for_s: float
    """How much longer a 429's ``retry-after`` holds the endpoint (0: not paused)."""
    waiting: int
    """Calls waiting for capacity."""


@dataclass(slots=True, eq=False)
class _Waiter:
    permit: Permit
    run_id: str
    event: anyio.Event = field(default_factory=anyio.Event)
    granted: bool = False


@dataclass(slots=True, eq=False)
class _Tenant:
    requests: TokenBucket | None
    tokens: TokenBucket | None


@dataclass(slots=True, eq=False)
class _Endpoint:
    model: str
    configured_rpm: float
    requests: TokenBucket | None
    tokens: TokenBucket | None
    ceiling_rpm: float
    """Where a lowered request limit recovers to (then, without a configured one, lifted)."""
    first_seen: float
    sent: deque[float] = field(default_factory=deque)
    """Send times within the last window: the observed rate."""
    paused_until: float = -math.inf
    lowered_at: float = -math.inf
    waiting: FairQueue[_Waiter] = field(default_factory=lambda: FairQueue[_Waiter]())


class RateLimiter:
    """The daemon's rate limits (module docstring). Not thread-safe; one event loop."""

    def __init__(
        self, settings: RateLimitSettings, *, patience_s: float,
        retry_after_cap_s: float, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._patience_s = patience_s
        self._retry_after_cap_s = retry_after_cap_s
        self._clock = clock
        self._endpoints: dict[str, _Endpoint] = {}
        self._tenants: dict[str, _Tenant] = {}
        self._per_tenant = settings.tenant_rpm > 0 or settings.tenant_tpm > 0

    # -- the gate's two calls ------------------------------------------------------------

    async def acquire(self, call: ModelCall, model: str, tenant: str, run_id: str,
                      attempt: int, after: Permit | None = None, *, tokens: int) -> Permit:
        """Wait for capacity to send ``call`` to ``model`` (its own, or one of its fallback
        chain) once; the permit to ``settle`` its reply with.

        ``after`` is the permit of the call's previous send (its deadline carries over);
        ``tokens`` the call's estimate (module docstring, 2). A cancellation point when
        it waits. Raises ``ModelCallFailedError`` when capacity does not come before the
        call's deadline (module docstring, 3 and 5).
        """
        now = self._clock()
        endpoint = self._endpoints.get(model)
        if endpoint is None:
            endpoint = self._endpoints[model] = self._new_endpoint(model, now)
        permit = after or Permit(model=model, tenant=tenant)
        quota = self._tenant(tenant, now) if self._per_tenant else None
        if (endpoint.requests is None and endpoint.tokens is None and quota is None
                and not endpoint.waiting):
            self._sent(endpoint, permit, now)  # the fast path: nothing limits this call
            return permit
        limits_tokens = endpoint.tokens is not None or (
            quota is not None and quota.tokens is not None)
        permit.tokens = tokens if limits_tokens else 0.0
        if now >= permit.deadline:  # a 429'd call past its patience
            raise self._refusal(call, run_id, attempt, endpoint, permit)
        if not endpoint.waiting and self._ready_at(endpoint, quota, permit, now) <= now:
            self._take(endpoint, quota, permit, now)
            return permit
        permit.deadline = min(permit.deadline, now + self._settings.max_wait_s)
        waiter = _Waiter(permit, run_id)
        endpoint.waiting.push(tenant, run_id, waiter)
        try:
            while True:
                next_at = self._serve(endpoint, now)
                if waiter.granted:
                    return permit
                if next_at > permit.deadline or now >= permit.deadline:
                    raise self._refusal(call, run_id, attempt, endpoint, permit)
                waiter.event = anyio.Event()  # a wake-up that granted nothing is spent
                with anyio.move_on_after(min(next_at, permit.deadline) - now):
                    await waiter.event.wait()
                now = self._clock()
        except BaseException:
            if not waiter.granted:
                self._leave(endpoint, waiter)
            raise

    def settle(self, permit: Permit, reply: TurnReply) -> bool:
        """Correct the permit's tokens by the reply's usage and learn from its status.

        ``True``: a retryable 429, which the call sends again through ``acquire`` (with
        ``after=permit``), not counted as an attempt or a failure. Never blocks.
        """
        endpoint = self._endpoints[permit.model]
        if permit.tokens:
            self._correct(endpoint, permit, reply)
        if reply.status == 429 and reply.retryable:
            self._lower(endpoint, permit, reply)
            return True
        if endpoint.ceiling_rpm and reply.error is None:
            self._raise(endpoint)
        return False

    # -- buckets -----------------------------------------------------------------------

    def _new_endpoint(self, model: str, now: float) -> _Endpoint:
        settings = self._settings
        limit = settings.models.get(model)
        rpm = limit.rpm if limit is not None else 0.0
        tpm = limit.tpm if limit is not None else 0.0
        return _Endpoint(
            model=model, configured_rpm=rpm,
            requests=TokenBucket.per_minute(rpm, settings.window_s, now) if rpm else None,
            tokens=TokenBucket.per_minute(tpm, settings.window_s, now) if tpm else None,
            ceiling_rpm=0.0, first_seen=now,
        )

    def _tenant(self, tenant: str, now: float) -> _Tenant:
        quota = self._tenants.get(tenant)
        if quota is None:
            s = self._settings
            quota = self._tenants[tenant] = _Tenant(
                requests=(TokenBucket.per_minute(s.tenant_rpm, s.window_s, now)
                          if s.tenant_rpm else None),
                tokens=(TokenBucket.per_minute(s.tenant_tpm, s.window_s, now)
                        if s.tenant_tpm else None),
            )
        return quota

    def _endpoint_ready_at(self, endpoint: _Endpoint, permit: Permit, now: float) -> float:
        at = max(now, endpoint.paused_until)
        if endpoint.requests is not None:
            at = max(at, endpoint.requests.ready_at(1.0, now))
        if endpoint.tokens is not None:
            at = max(at, endpoint.tokens.ready_at(permit.tokens, now))
        return at

    @staticmethod
    def _tenant_ready_at(quota: _Tenant | None, permit: Permit, now: float) -> float:
        at = now
        if quota is not None:
            if quota.requests is not None:
                at = max(at, quota.requests.ready_at(1.0, now))
            if quota.tokens is not None:
                at = max(at, quota.tokens.ready_at(permit.tokens, now))
        return at

    def _ready_at(self, endpoint: _Endpoint, quota: _Tenant | None, permit: Permit,
                  now: float) -> float:
        return max(self._endpoint_ready_at(endpoint, permit, now),
                   self._tenant_ready_at(quota, permit, now))

    def _take(self, endpoint: _Endpoint, quota: _Tenant | None, permit: Permit,
              now: float) -> None:
        for bucket, amount in ((endpoint.requests, 1.0), (endpoint.tokens, permit.tokens)):
            if bucket is not None:
                bucket.level -= amount
        if quota is not None:
            for bucket, amount in ((quota.requests, 1.0), (quota.tokens, permit.tokens)):
                if bucket is not None:
                    bucket.level -= amount
        self._sent(endpoint, permit, now)

    def _sent(self, endpoint: _Endpoint, permit: Permit, now: float) -> None:
        permit.sent_at = now
        sent = endpoint.sent
        sent.append(now)
        horizon = now - self._settings.window_s
        while sent[0] < horizon:
            sent.popleft()

    def _correct(self, endpoint: _Endpoint, permit: Permit, reply: TurnReply) -> None:
        """Give back what the estimate took beyond the usage (or take the excess)."""
        refund = permit.tokens - (reply.usage.total_tokens if reply.error is None else 0)
        permit.tokens = 0.0
        buckets = [endpoint.tokens]
        quota = self._tenants.get(permit.tenant)
        if quota is not None:
            buckets.append(quota.tokens)
        for bucket in buckets:
            if bucket is not None:
                bucket.give_back(refund)
        if refund > 0 and endpoint.waiting:
            self._serve(endpoint, self._clock())

    # -- the fair queue ----------------------------------------------------------------

    def _serve(self, endpoint: _Endpoint, now: float) -> float:
        """Grant the waiters of ``endpoint`` what capacity allows, in the fair order
        (module docstring, 3); the earliest time more could be granted (``inf``: none
        waits)."""
        waiting = endpoint.waiting
        while waiting:
            later = math.inf
            for tenant, waiter in waiting.heads():
                permit = waiter.permit
                at = self._endpoint_ready_at(endpoint, permit, now)
                if at > now:
                    return at  # the head waits for the endpoint: nobody overtakes it
                quota = self._tenants.get(tenant) if self._per_tenant else None
                at = self._tenant_ready_at(quota, permit, now)
                if at > now:
                    later = min(later, at)  # this tenant is at its own limit: skip it
                    continue
                self._take(endpoint, quota, permit, now)
                waiting.pop(tenant)
                waiter.granted = True
                waiter.event.set()
                break
            else:
                return later
        return math.inf

    def _leave(self, endpoint: _Endpoint, waiter: _Waiter) -> None:
        endpoint.waiting.remove(waiter.permit.tenant, waiter.run_id, waiter)
        # The head may have left: the next one's own timer may be later than its turn.
        for _, head in endpoint.waiting.heads():
            head.event.set()

    def _refusal(self, call: ModelCall, run_id: str, attempt: int, endpoint: _Endpoint,
                 permit: Permit) -> ModelCallFailedError:
        return ModelCallFailedError(run_id, call.key, endpoint.model, attempt,
                                    self._problem(endpoint, permit))

    def _problem(self, endpoint: _Endpoint, permit: Permit) -> str:
        if permit.problem:
            return (f"{permit.problem}; still rate limited (HTTP 429) after the patience "
                    f"of {self._patience_s:g} s")
        limits = []
        if endpoint.requests is not None:
            limits.append(f"{endpoint.requests.rate * _MINUTE:g} requests/min")
        if endpoint.tokens is not None:
            limits.append(f"{endpoint.tokens.rate * _MINUTE:g} tokens/min")
        s = self._settings
        if s.tenant_rpm:
            limits.append(f"{s.tenant_rpm:g} requests/min of tenant {permit.tenant!r}")
        if s.tenant_tpm:
            limits.append(f"{s.tenant_tpm:g} tokens/min of tenant {permit.tenant!r}")
        return (f"no rate-limit capacity within rate_limits.max_wait_s = {s.max_wait_s:g} s "
                f"(limits: {', '.join(limits) or 'none'})")

    # -- AIMD --------------------------------------------------------------------------

    def statistics(self) -> tuple[EndpointStatistics, ...]:
        """Each endpoint seen so far, by model name. Never blocks."""
        now = self._clock()
        return tuple(
            EndpointStatistics(
                model=model,
                limit_rpm=None if e.requests is None else e.requests.rate * _MINUTE,
                observed_rpm=self._observed_rpm(e, now),
                paused_for_s=max(0.0, e.paused_until - now), waiting=len(e.waiting),
            )
            for model, e in sorted(self._endpoints.items()))

    def _observed_rpm(self, endpoint: _Endpoint, now: float) -> float:
        """Requests per minute sent over the last window (or since the endpoint was first
        seen, counted as at least a second)."""
        horizon = now - self._settings.window_s
        count = sum(1 for t in endpoint.sent if t >= horizon)
        span = max(1.0, min(self._settings.window_s, now - endpoint.first_seen))
        return count / span * _MINUTE

    def _lower(self, endpoint: _Endpoint, permit: Permit, reply: TurnReply) -> None:
        s = self._settings
        now = self._clock()
        permit.problem = reply.error or "rate limited (HTTP 429)"
        permit.deadline = min(permit.deadline, now + self._patience_s)
        pause = min(reply.retry_after_s or 0.0, self._retry_after_cap_s)
        if pause > 0:
            endpoint.paused_until = max(endpoint.paused_until, now + pause)
        if permit.sent_at < endpoint.lowered_at:
            return  # sent under the previous limit: that round was already counted
        if endpoint.requests is None:
            current = self._observed_rpm(endpoint, now)
            endpoint.ceiling_rpm = current
        else:
            current = endpoint.requests.rate * _MINUTE
            endpoint.ceiling_rpm = endpoint.configured_rpm or max(endpoint.ceiling_rpm,
                                                                  current)
        lowered = max(s.aimd_min_rpm, current * s.aimd_decrease)
        bucket = TokenBucket.per_minute(lowered, s.window_s, now)
        # One request may go when the pause ends (the retry of a call that was not paced
        # yet); what the old bucket owed stays owed, so a 429 to that one waits a turn.
        previous = endpoint.requests
        bucket.level = min(1.0, 1.0 if previous is None else previous.level)
        bucket.updated = max(now, endpoint.paused_until)  # nothing accrues while paused
        endpoint.requests = bucket
        endpoint.lowered_at = now
        log.info("rate_limit_lowered", model=endpoint.model, rpm=round(lowered, 3),
                 retry_after_s=pause)

    def _raise(self, endpoint: _Endpoint) -> None:
        bucket = endpoint.requests
        if bucket is None:
            return
        bucket.refill(self._clock())  # what accrued at the old rate
        s = self._settings
        rpm = bucket.rate * _MINUTE + s.aimd_increase_rpm
        if rpm < endpoint.ceiling_rpm:
            bucket.rate = rpm / _MINUTE
            bucket.capacity = max(1.0, bucket.rate * s.window_s)
            return
        endpoint.ceiling_rpm = 0.0
        if endpoint.configured_rpm:
            bucket.rate = endpoint.configured_rpm / _MINUTE
            bucket.capacity = max(1.0, bucket.rate * s.window_s)
        else:
            endpoint.requests = None  # recovered: no limit again
        log.info("rate_limit_recovered", model=endpoint.model,
                 rpm=endpoint.configured_rpm or None)
        if endpoint.waiting:
            self._serve(endpoint, self._clock())
