"""Errors of the supervisor package.

The tree::

    SupervisorError                      root of everything raised by supervisor/
    ├── RestartIntensityExceededError    over max_restarts within period: the supervisor gave up
    ├── BreakerOpenError                 a circuit breaker is open: the call was not made
    ├── LimitReachedError                a limit the parent enforces stopped the work
    │   ├── StepCapReachedError          a step cap (per run, per step, per worker) was reached
    │   └── BudgetExhaustedError         the next call could exceed the run's budget
    ├── PlanInvalidError                 the model's plan failed validation on every attempt
    ├── RunNotFoundError                 no run with that id in the journal
    └── DaemonError                      the daemon cannot start or be reached
"""

from __future__ import annotations


class SupervisorError(Exception):
    """Root of the supervisor package's errors."""

    retryable: bool = False


class RestartIntensityExceededError(SupervisorError):
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
    retryable = True

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(
            f"circuit breaker {name!r} is open: failing fast, next probe in {retry_after:.1f}s"
        )


class LimitReachedError(SupervisorError):
    """A limit enforced by the parent stopped the work."""


class StepCapReachedError(LimitReachedError):
    def __init__(self, cap_name: str, cap: int, run_id: str, worker: str | None = None) -> None:
        self.cap_name = cap_name
        self.cap = cap
        self.run_id = run_id
        self.worker = worker
        who = f" (worker {worker!r})" if worker else ""
        super().__init__(f"{cap_name} cap {cap} reached for run {run_id!r}{who}")


class BudgetExhaustedError(LimitReachedError):
    def __init__(self, run_id: str, budget_usd: float, spent_usd: float, needed_usd: float) -> None:
        self.run_id = run_id
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd
        self.needed_usd = needed_usd
        super().__init__(
            f"budget ${budget_usd:.4f} of run {run_id!r} would be exceeded: "
            f"spent ${spent_usd:.4f}, the next call may cost up to ${needed_usd:.4f}"
        )


class PlanInvalidError(SupervisorError):
    def __init__(self, run_id: str, attempts: int, problem: str) -> None:
        self.run_id = run_id
        self.attempts = attempts
        self.problem = problem
        super().__init__(f"plan of run {run_id!r} invalid after {attempts} attempts: {problem}")


class RunNotFoundError(SupervisorError):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run {run_id!r} in the journal")


class DaemonError(SupervisorError):
    """The daemon cannot start, or a client command cannot reach it."""
