"""Errors of the supervisor package.

The tree::

    SupervisorError                      root of everything raised by supervisor/
    ├── RestartIntensityExceededError    over max_restarts within period: the supervisor gave up
    ├── BreakerOpenError                 a circuit breaker is open: the call was not made
    ├── LimitReachedError                a limit the parent enforces stopped the work
    │   ├── StepCapReachedError          a step cap (per run, per step, per worker) was reached
    │   ├── StepStoppedError             a guard stopped the step (a loop): the run ends
    │   └── BudgetExhaustedError         the next call could exceed a budget at some level
    ├── PlanInvalidError                 the model's plan failed validation on every attempt
    ├── CallFailedError                  the call gate let a call through no more (see gate.py)
    │   ├── CallDeniedError              an interceptor denied the call
    │   ├── ModelCallFailedError         a model call failed for good (refused, or out of attempts)
    │   ├── WorkerUnreachableError       no worker answered within the transport patience
    │   └── ToolCallFailedError          the worker could not run the tool call at all
    ├── EffectUncertainError             a side effect may have happened and cannot be settled
    ├── IllegalTransitionError           the run state machine refused a status change
    ├── JournalError                     the journal file cannot be opened or written
    ├── RunNotFoundError                 no run with that id in the journal
    ├── DaemonError                      the daemon cannot start or be reached
    └── ReplayError                      a recorded run cannot be replayed (replay.py)
"""

from __future__ import annotations

__all__ = (
    "BreakerOpenError",
    "BudgetExhaustedError",
    "CallDeniedError",
    "CallFailedError",
    "DaemonError",
    "EffectUncertainError",
    "IllegalTransitionError",
    "JournalError",
    "LimitReachedError",
    "ModelCallFailedError",
    "PlanInvalidError",
    "ReplayError",
    "RestartIntensityExceededError",
    "RunNotFoundError",
    "StepCapReachedError",
    "StepStoppedError",
    "SupervisorError",
    "ToolCallFailedError",
    "WorkerUnreachableError",
)


class SupervisorError(Exception):
    """Root of the supervisor package's errors."""

    retryable: bool = False


class RestartIntensityExceededError(SupervisorError):
    """Raised when a supervisor needed more than ``max_restarts`` restarts within
    ``period`` seconds and gave up (out of its ``async with``)."""

    def __init__(self, supervisor: str, child: str, max_restarts: int, period: float) -> None:
        self.supervisor = supervisor
        self.child = child
        self.max_restarts = max_restarts
        self.period = period
        super().__init__(
            f"supervisor {supervisor!r} gave up: child {child!r} needed more than "
            f"{max_restarts} restarts within {period:g}s"
        )


class BreakerOpenError(SupervisorError):
    """Raised when a call is refused because its circuit breaker is open."""

    retryable = True

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(
            f"circuit breaker {name!r} is open: failing fast, next probe in {retry_after:.1f}s"
        )


class LimitReachedError(SupervisorError):
    """A limit enforced by the parent stopped the work (raised as one of its subclasses)."""


class StepCapReachedError(LimitReachedError):
    """Raised when a run reaches a step cap: steps per run, turns per step, steps per worker."""

    def __init__(self, cap_name: str, cap: int, run_id: str, worker: str | None = None) -> None:
        self.cap_name = cap_name
        self.cap = cap
        self.run_id = run_id
        self.worker = worker
        who = f" (worker {worker!r})" if worker else ""
        super().__init__(f"{cap_name} cap {cap} reached for run {run_id!r}{who}")


class StepStoppedError(LimitReachedError):
    """Raised when an interceptor refused a tool call and stopped its step (loop
    detection: ``Deny(ends_run=...)``); the run ends in ``status`` with its partial
    results."""

    def __init__(self, run_id: str, key: str, interceptor: str, reason: str,
                 status: str) -> None:
        self.run_id = run_id
        self.key = key
        self.interceptor = interceptor
        self.reason = reason
        self.status = status
        super().__init__(f"step of run {run_id!r} stopped by {interceptor} at call {key!r}: "
                         f"{reason}")


class BudgetExhaustedError(LimitReachedError):
    """Raised when the worst case of the next call could exceed a budget at one of its
    levels: ``level`` is ``day`` (the daemon's), ``tenant`` (``name``'s day), ``run`` or
    ``step`` (``name`` is the step's index); ``unit`` ``usd`` or ``tokens``. Nothing was
    reserved at any level."""

    def __init__(self, run_id: str, budget_usd: float, spent_usd: float, needed_usd: float,
                 *, level: str = "run", unit: str = "usd", name: str = "") -> None:
        self.run_id = run_id
        self.budget_usd = budget_usd
        """The limit that would be exceeded, in ``unit`` (dollars or tokens)."""
        self.spent_usd = spent_usd
        """Spent and held at that level so far, in ``unit``."""
        self.needed_usd = needed_usd
        """The next call's worst case, in ``unit``."""
        self.level = level
        self.unit = unit
        self.name = name
        if unit == "usd":
            limit, spent, needed = (f"${budget_usd:.4f}", f"${spent_usd:.4f}",
                                    f"${needed_usd:.4f}")
        else:
            limit, spent, needed = (f"{budget_usd:.0f} tokens", f"{spent_usd:.0f} tokens",
                                    f"{needed_usd:.0f} tokens")
        owner = {"day": "the day", "tenant": f"tenant {name!r} for the day",
                 "step": f"step {name} of run {run_id!r}"}.get(level, f"run {run_id!r}")
        super().__init__(
            f"{level} budget {limit} of {owner} would be exceeded by run {run_id!r}: "
            f"spent {spent}, the next call may use up to {needed}"
            if level != "run" else
            f"run budget {limit} of run {run_id!r} would be exceeded: "
            f"spent {spent}, the next call may use up to {needed}"
        )


class PlanInvalidError(SupervisorError):
    """Raised when the model's plan failed validation on every allowed attempt."""

    def __init__(self, run_id: str, attempts: int, problem: str) -> None:
        self.run_id = run_id
        self.attempts = attempts
        self.problem = problem
        super().__init__(f"plan of run {run_id!r} invalid after {attempts} attempts: {problem}")


class CallFailedError(SupervisorError):
    """Raised when a call of run ``run_id`` did not go through the call gate and will not.

    ``retryable`` says whether a fresh attempt of the step may do better; the gate has
    already made every retry of the call itself that its policy allows.
    """

    def __init__(self, run_id: str, key: str, problem: str, *, retryable: bool) -> None:
        self.run_id = run_id
        self.key = key
        self.problem = problem
        self.retryable = retryable
        super().__init__(problem)


class CallDeniedError(CallFailedError):
    """Raised when an interceptor answered *deny* for a model call."""

    def __init__(self, run_id: str, key: str, interceptor: str, reason: str) -> None:
        self.interceptor = interceptor
        self.reason = reason
        super().__init__(run_id, key, f"call {key!r} denied by {interceptor}: {reason}",
                         retryable=False)


class ModelCallFailedError(CallFailedError):
    """Raised when a model call was refused for good (spend limit, invalid request,
    authentication) or ran out of attempts or patience; never retried at the step."""

    def __init__(
        self, run_id: str, key: str, model: str, attempts: int, problem: str
    ) -> None:
        self.model = model
        self.attempts = attempts
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        super().__init__(run_id, key, f"model {model!r} failed after {tries}: {problem}",
                         retryable=False)


class WorkerUnreachableError(CallFailedError):
    """Raised when no worker of ``role`` answered within the transport patience."""

    def __init__(self, run_id: str, key: str, role: str, problem: str) -> None:
        self.role = role
        super().__init__(run_id, key, f"worker {role!r} did not answer: {problem}",
                         retryable=True)


class ToolCallFailedError(CallFailedError):
    """Raised when a worker answered a tool call with an error instead of a record."""

    def __init__(self, run_id: str, key: str, tool: str, problem: str) -> None:
        self.tool = tool
        super().__init__(run_id, key, f"tool call {key!r} ({tool}) failed: {problem}",
                         retryable=True)


class EffectUncertainError(SupervisorError):
    """Raised when a side-effecting call may or may not have acted and the tool can
    neither reconcile it nor repeat it safely: a person must look (``needs_human``)."""

    def __init__(self, key: str, tool: str, problem: str) -> None:
        self.key = key
        self.tool = tool
        self.problem = problem
        super().__init__(f"tool call {key!r} ({tool}): {problem}")


class IllegalTransitionError(SupervisorError):
    """Raised when a run's status change is not one the run state machine allows
    (``supervisor/run_states.py``); nothing was written.

    ``old`` is ``None`` when the run was being created in status ``new``.
    """

    def __init__(self, run_id: str, old: str | None, new: str) -> None:
        self.run_id = run_id
        self.old = old
        self.new = new
        if old is None:
            super().__init__(f"run {run_id!r} cannot start as {new!r}")
        else:
            super().__init__(f"run {run_id!r} cannot go from {old!r} to {new!r}")


class JournalError(SupervisorError):
    """Raised when the journal file cannot be opened (not a database, read-only, a newer
    schema) or a write to it failed; ``problem`` says which."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"journal {path!r}: {problem}")


class RunNotFoundError(SupervisorError):
    """Raised when a run id is not in the journal."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run {run_id!r} in the journal")


class DaemonError(SupervisorError):
    """Raised when the daemon cannot start, or a client command cannot reach it or is
    refused by it (a run that already ended cannot be cancelled)."""


class ReplayError(SupervisorError):
    """Raised when a recorded run cannot be replayed (``replay.py``): it has not ended,
    it was resumed, or a scenario file cannot be read; ``problem`` says which."""

    def __init__(self, run_id: str, problem: str) -> None:
        self.run_id = run_id
        self.problem = problem
        super().__init__(f"cannot replay run {run_id!r}: {problem}")
