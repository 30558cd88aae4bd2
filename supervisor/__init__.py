"""The supervisors: the supervision tree, the per-run supervisor, limits, the journal,
the daemon and the CLI. Only this package decides."""

from __future__ import annotations

from warden.supervisor.breaker import BreakerState, BreakerStatistics, CircuitBreaker
from warden.supervisor.budget import Budget
from warden.supervisor.daemon import Daemon, open_daemon, read_daemon_file
from warden.supervisor.errors import (
    BreakerOpenError,
    BudgetExhaustedError,
    DaemonError,
    LimitReachedError,
    PlanInvalidError,
    RestartIntensityExceededError,
    RunNotFoundError,
    StepCapReachedError,
    SupervisorError,
)
from warden.supervisor.journal import Journal, JournalError, open_journal
from warden.supervisor.restart_intensity import RestartVerdict, add_restart
from warden.supervisor.run import RunContext, RunSupervisor
from warden.supervisor.supervision import (
    ChildInfo,
    ChildSpec,
    ExitKind,
    RestartType,
    Strategy,
    Supervisor,
    SupervisorStatistics,
    open_supervisor,
    supervisor_child,
)

__all__ = [
    "BreakerOpenError",
    "BreakerState",
    "BreakerStatistics",
    "Budget",
    "BudgetExhaustedError",
    "ChildInfo",
    "ChildSpec",
    "CircuitBreaker",
    "Daemon",
    "DaemonError",
    "ExitKind",
    "Journal",
    "JournalError",
    "LimitReachedError",
    "PlanInvalidError",
    "RestartIntensityExceededError",
    "RestartType",
    "RestartVerdict",
    "RunContext",
    "RunNotFoundError",
    "RunSupervisor",
    "StepCapReachedError",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorStatistics",
    "add_restart",
    "open_daemon",
    "open_journal",
    "open_supervisor",
    "read_daemon_file",
    "supervisor_child",
]
