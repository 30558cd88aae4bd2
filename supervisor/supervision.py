"""Supervision trees, after Erlang/OTP's ``supervisor``.

The rules (OTP words, exactly):

- **Children start left to right and stop in reverse.** ``open_supervisor`` starts its
  children in list order, each awaited until it signals readiness with
  ``task_status.started()``; a child that fails before that fails the supervisor's start,
  and the children already started are stopped in reverse. Leaving the ``async with``
  stops every child in reverse start order.
- **Restart types** say whether a child that exited is restarted:
  ``permanent`` always; ``transient`` only after an abnormal exit (it raised);
  ``temporary`` never. A child that is not going to run again leaves the child list, so
  thousands of short-lived dynamic children do not leak.
- **Strategies** say which children are restarted with it:
  ``one_for_one`` only that child; ``one_for_all`` every other child is stopped in
  reverse, then all are started left to right; ``rest_for_one`` the children started
  after it are stopped in reverse, then it and they are started in order. A ``temporary``
  sibling stopped this way is not restarted.
- **Restart intensity:** more than ``max_restarts`` restarts within ``period`` seconds and
  the supervisor gives up: it stops all children in reverse and raises
  ``RestartIntensityExceededError`` out of its ``async with`` (escalation). A supervisor
  run as a child (``supervisor_child``) therefore crashes, and its parent applies its
  own restart type and strategy to it.
- **Shutdown with a grace timeout:** stopping a child cancels its scope and waits up to
  its ``shutdown_timeout`` for its cleanup; a child that overruns is logged
  (``child_shutdown_overran``) and the supervisor moves on. Cancellation cannot preempt
  a shielded cleanup, so the supervisor's task group still waits for it before exiting.

Each child runs in its own task of the supervisor's task group, inside its own cancel
scope, which is shielded: only its supervisor stops it, so even when the supervisor is
cancelled from outside the children stop one by one in reverse. A child's exceptions are
caught by its wrapper task, so a crash never cancels its siblings.

``supervise_one`` is the same rules for the commonest tree of all, one ``transient`` or
``permanent`` child: it runs the child in the caller's own task (no task group, lock or
exit queue), restarts it under its restart intensity, and escalates past it. The daemon
runs one per run: a per-run ``open_supervisor`` cost about a tenth of a run's CPU in the
triad benchmark.

Events (structlog, fixed names): ``child_started``, ``child_terminated`` (``exit`` is
``normal``, ``crash`` with ``error``, or ``shutdown``), ``child_restarted``,
``child_shutdown_overran``, ``restart_intensity_exceeded``, ``supervisor_stopped``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Literal, get_args

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from warden.supervisor.errors import RestartIntensityExceededError
from warden.supervisor.restart_intensity import add_restart

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]
ExitKind = Literal["normal", "crash", "shutdown"]

_STRATEGIES: frozenset[str] = frozenset(get_args(Strategy))
_RESTART_TYPES: frozenset[str] = frozenset(get_args(RestartType))

log = structlog.get_logger("warden.supervisor")


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start a child and what to do when it exits.

    ``start`` is called as ``await start(task_status=...)``; it calls
    ``task_status.started()`` once ready, then runs until it returns (a normal exit) or
    raises (a crash). It must not call ``start_child``/``terminate_child`` on its own
    supervisor before signalling started: the supervisor is busy starting it.
    """

    name: str
    start: Callable[..., Awaitable[None]]
    restart: RestartType = "permanent"
    shutdown_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.restart not in _RESTART_TYPES:
            raise ValueError(
                f"child {self.name!r}: restart must be one of {sorted(_RESTART_TYPES)}, "
                f"got {self.restart!r}"
            )
        if self.shutdown_timeout < 0:
            raise ValueError(
                f"child {self.name!r}: shutdown_timeout must be >= 0, got {self.shutdown_timeout!r}"
            )


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of ``Supervisor.which_children()``."""

    name: str
    restart: RestartType
    running: bool
    restarts: int


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """A snapshot of a supervisor, from ``Supervisor.statistics()``."""

    name: str
    strategy: Strategy
    children: int
    running: int
    restarts: int
    """Restarts decided since the supervisor opened (one per exit, whatever the strategy)."""
    max_restarts: int
    period: float
    stopping: bool


class _Child:
    """A child's spec and the state of its current incarnation. Kept small on purpose."""

    __slots__ = ("done", "incarnation", "restarts", "running", "scope", "spec", "stopping")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.scope = anyio.CancelScope(shield=True)
        self.done = anyio.Event()
        self.incarnation = 0
        self.restarts = 0
        self.running = False
        self.stopping = False


class _Readiness:
    """The ``task_status`` handed to a child: marks it running, then passes readiness on."""

    __slots__ = ("_child", "_status", "_supervisor", "started_called")

    def __init__(self, supervisor: str, child: _Child, status: TaskStatus[None]) -> None:
        self._supervisor = supervisor
        self._child = child
        self._status = status
        self.started_called = False

    def started(self, value: None = None) -> None:
        self._status.started(value)
        self.started_called = True
        self._child.running = True
        log.info("child_started", supervisor=self._supervisor, child=self._child.spec.name)


# An exit as reported by a child's wrapper task: the child, its incarnation, the error
# it raised (None for a normal exit).
_Exit = tuple[_Child, int, Exception | None]


class Supervisor:
    """A running supervisor; obtained from ``open_supervisor``, never built directly."""

    def __init__(
        self,
        name: str,
        strategy: Strategy,
        max_restarts: int,
        period: float,
        task_group: TaskGroup,
    ) -> None:
        self.name = name
        self.strategy: Strategy = strategy
        self.max_restarts = max_restarts
        self.period = period
        self._tg = task_group
        self._children: dict[str, _Child] = {}  # insertion order is start order
        self._restart_times: tuple[float, ...] = ()
        self._restarts_total = 0
        self._lock = anyio.Lock()  # one structural change at a time
        self._exits_send, self._exits_receive = anyio.create_memory_object_stream[_Exit](math.inf)
        self._stopping = False
        self._escalation: RestartIntensityExceededError | None = None

    # -- public API ----------------------------------------------------------------

    async def start_child(self, spec: ChildSpec) -> None:
        """Start a dynamic child after the existing ones; return once it signalled started.

        Blocks until the child is ready; a cancellation point. Raises whatever the child
        raised before signalling started (the child is then not added), ``ValueError``
        if a child of that name exists, ``RuntimeError`` if the supervisor is stopping.
        """
        async with self._lock:
            if self._stopping:
                raise RuntimeError(f"supervisor {self.name!r} is stopping: cannot start children")
            if spec.name in self._children:
                raise ValueError(f"supervisor {self.name!r} already has a child {spec.name!r}")
            child = _Child(spec)
            self._children[spec.name] = child
            try:
                await self._start(child)
            except BaseException:
                self._children.pop(spec.name, None)
                raise

    async def terminate_child(self, name: str) -> None:
        """Stop a child (its grace timeout applies) and remove it; it is not restarted.

        Blocks until the child finished or overran its ``shutdown_timeout``; the wait is
        shielded so the stop completes even if the caller is cancelled. Raises
        ``LookupError`` if there is no child of that name (it may have exited already).
        """
        async with self._lock:
            child = self._children.pop(name, None)
            if child is None:
                raise LookupError(f"supervisor {self.name!r} has no child {name!r}")
            with anyio.CancelScope(shield=True):
                await self._stop(child)

    def which_children(self) -> list[ChildInfo]:
        """The children in start order. Does not block."""
        return [
            ChildInfo(c.spec.name, c.spec.restart, c.running, c.restarts)
            for c in self._children.values()
        ]

    def statistics(self) -> SupervisorStatistics:
        """A frozen snapshot of this supervisor. Does not block."""
        return SupervisorStatistics(
            name=self.name,
            strategy=self.strategy,
            children=len(self._children),
            running=sum(1 for c in self._children.values() if c.running),
            restarts=self._restarts_total,
            max_restarts=self.max_restarts,
            period=self.period,
            stopping=self._stopping,
        )

    # -- starting and stopping one child -------------------------------------------

    async def _start(self, child: _Child) -> None:
        """Start a new incarnation of ``child``; raise what it raised before it was ready."""
        if child.incarnation:  # a restart: the first incarnation uses those of __init__
            child.scope = anyio.CancelScope(shield=True)
            child.done = anyio.Event()
            child.stopping = False
        child.incarnation += 1
        await self._tg.start(self._run_child, child, child.incarnation)

    async def _run_child(
        self, child: _Child, incarnation: int, *, task_status: TaskStatus[None]
    ) -> None:
        """The wrapper task of one incarnation: runs the child, catches and reports its exit."""
        ready = _Readiness(self.name, child, task_status)
        done = child.done
        error: Exception | None = None
        try:
            with child.scope:
                await child.spec.start(task_status=ready)
            if not ready.started_called:
                raise RuntimeError(
                    f"child {child.spec.name!r} of supervisor {self.name!r} returned "
                    "before it signalled started"
                )
        except Exception as exc:
            if not ready.started_called:
                raise  # tg.start() raises it in whoever was starting the child
            error = exc
        finally:
            if ready.started_called and child.incarnation == incarnation:
                child.running = False
                self._report_exit(child, incarnation, error)
            done.set()

    def _report_exit(self, child: _Child, incarnation: int, error: Exception | None) -> None:
        kind: ExitKind = "shutdown" if child.stopping else "crash" if error else "normal"
        if error is None:
            log.info("child_terminated", supervisor=self.name, child=child.spec.name, exit=kind)
        else:
            log.warning(
                "child_terminated",
                supervisor=self.name,
                child=child.spec.name,
                exit=kind,
                error=repr(error),
                exc_info=error,
            )
        if not child.stopping:
            try:
                self._exits_send.send_nowait((child, incarnation, error))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # the supervisor has finished supervising: nothing to restart

    async def _stop(self, child: _Child) -> None:
        """Cancel a running child and wait up to its grace timeout for it to finish."""
        if not child.running:
            return
        child.stopping = True
        child.scope.cancel()
        with anyio.move_on_after(child.spec.shutdown_timeout) as grace:
            await child.done.wait()
        if grace.cancelled_caught:
            log.warning(
                "child_shutdown_overran",
                supervisor=self.name,
                child=child.spec.name,
                shutdown_timeout=child.spec.shutdown_timeout,
            )

    async def _stop_all(self) -> None:
        """Stop every child in reverse start order and forget them; no more restarts."""
        self._stopping = True
        for child in reversed(list(self._children.values())):
            await self._stop(child)
        self._children.clear()

    # -- supervising -------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Handle child exits one at a time until the supervisor stops or gives up.

        Started with ``start_soon``, not ``start``: exits are queued on an unbounded
        stream made in ``__init__``, so none is lost before this task first waits, and a
        supervisor per run does not pay for a second readiness handshake."""
        async with self._exits_receive:
            async for exit_ in self._exits_receive:
                # Shielded so a restart in progress is completed (or a give-up finished)
                # even if the supervisor is cancelled meanwhile: the children are never
                # left half restarted.
                with anyio.CancelScope(shield=True):
                    async with self._lock:
                        if not self._stopping:
                            await self._handle_exit(*exit_)
                if self._escalation is not None:
                    self._tg.cancel_scope.cancel()  # ends the body: open_supervisor raises
                    return

    async def _handle_exit(self, child: _Child, incarnation: int, error: Exception | None) -> None:
        name = child.spec.name
        if self._children.get(name) is not child or child.incarnation != incarnation:
            return  # stale: that incarnation was already stopped or replaced
        restart = child.spec.restart
        if restart == "temporary" or (restart == "transient" and error is None):
            del self._children[name]
            return

        verdict = add_restart(
            self._restart_times,
            anyio.current_time(),
            max_restarts=self.max_restarts,
            period=self.period,
        )
        self._restart_times = verdict.restarts
        if not verdict.allowed:
            log.error(
                "restart_intensity_exceeded",
                supervisor=self.name,
                child=name,
                max_restarts=self.max_restarts,
                period=self.period,
            )
            self._escalation = RestartIntensityExceededError(
                self.name, name, self.max_restarts, self.period
            )
            await self._stop_all()
            return
        self._restarts_total += 1

        siblings = list(self._children.values())
        if self.strategy == "one_for_one":
            affected = [child]
        elif self.strategy == "one_for_all":
            affected = siblings
        else:  # rest_for_one
            affected = siblings[siblings.index(child) :]
        for other in reversed(affected):
            await self._stop(other)  # the exited child is not running: skipped
        for other in affected:
            if other is not child and other.spec.restart == "temporary":
                del self._children[other.spec.name]  # OTP: temporary children never restart
        for other in affected:
            if other.spec.name not in self._children:
                continue
            other.restarts += 1  # counted before it runs, so observers see it with the start
            try:
                await self._start(other)
            except Exception as exc:
                # Failing to restart is a crash of that child: it counts against the
                # restart intensity and the strategy applies again from it. The children
                # after it stay stopped until then.
                self._exits_send.send_nowait((other, other.incarnation, exc))
                return
            log.info(
                "child_restarted",
                supervisor=self.name,
                child=other.spec.name,
                restarts=other.restarts,
            )


@asynccontextmanager
async def _supervisor_scope(
    children: Sequence[ChildSpec],
    name: str,
    strategy: Strategy,
    max_restarts: int,
    period: float,
) -> AsyncIterator[Supervisor]:
    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        sup = Supervisor(name, strategy, max_restarts, period, tg)
        tg.start_soon(sup._supervise)
        try:
            for spec in children:
                await sup.start_child(spec)
            yield sup
        except Exception as exc:
            # Raised after the task group exits, so callers see the error itself rather
            # than an ExceptionGroup from the task group.
            error = exc
        finally:
            with anyio.CancelScope(shield=True):
                async with sup._lock:
                    await sup._stop_all()
                sup._exits_send.close()
            reason = "escalated" if sup._escalation else "error" if error else "normal"
            log.info("supervisor_stopped", supervisor=name, reason=reason)
    if sup._escalation is not None:
        raise sup._escalation
    if error is not None:
        raise error


def open_supervisor(
    children: Sequence[ChildSpec] = (),
    *,
    name: str,
    strategy: Strategy = "one_for_one",
    max_restarts: int = 3,
    period: float = 5.0,
) -> AbstractAsyncContextManager[Supervisor]:
    """Open a supervisor that owns ``children``; leaving the block stops them in reverse.

    Entering blocks until every child signalled started; it raises what a child raised
    before that (after stopping the ones already started). While the body runs, exits
    are handled by the restart types and the strategy. If the restart intensity is
    exceeded the body is cancelled and ``RestartIntensityExceededError`` is raised out of
    the ``async with``. An exception from the body is raised as itself, after the
    children are stopped. Raises ``ValueError`` on an unknown strategy or bad limits.
    """
    if strategy not in _STRATEGIES:
        raise ValueError(
            f"supervisor {name!r}: strategy must be one of {sorted(_STRATEGIES)}, got {strategy!r}"
        )
    if max_restarts < 0 or period <= 0:
        raise ValueError(
            f"supervisor {name!r}: need max_restarts >= 0 and period > 0, "
            f"got {max_restarts!r} and {period!r}"
        )
    return _supervisor_scope(children, name, strategy, max_restarts, period)


def supervisor_child(
    name: str,
    children: Sequence[ChildSpec] = (),
    *,
    strategy: Strategy = "one_for_one",
    max_restarts: int = 3,
    period: float = 5.0,
    restart: RestartType = "permanent",
    shutdown_timeout: float = math.inf,
) -> ChildSpec:
    """A child spec that runs a supervisor over ``children``: a subtree.

    The subtree is ready once all its children are. When it gives up, its
    ``RestartIntensityExceededError`` is a crash of this child to the parent. The grace
    timeout defaults to infinity, as for OTP supervisors: a subtree gets the time its own
    children's grace timeouts add up to.
    """
    children = tuple(children)

    async def run_subtree(*, task_status: TaskStatus[None]) -> None:
        async with open_supervisor(
            children, name=name, strategy=strategy, max_restarts=max_restarts, period=period
        ):
            task_status.started()
            await anyio.sleep_forever()

    return ChildSpec(name, run_subtree, restart, shutdown_timeout)


async def supervise_one(
    name: str,
    child: str,
    start: Callable[[], Awaitable[None]],
    *,
    restart: RestartType = "transient",
    max_restarts: int = 3,
    period: float = 5.0,
) -> None:
    """Supervise one child, ``start()``, in the caller's task: a supervisor of one child.

    ``transient``: returns when the child returns; after a crash (an ``Exception``) starts
    it again. ``permanent``: starts it again after either. ``temporary`` is refused (run
    the child directly instead). More than ``max_restarts`` restarts within ``period``
    seconds and it gives up: ``RestartIntensityExceededError`` (the last crash is its
    ``__cause__``). A cancellation point; being cancelled stops the child (the same task)
    and is not a crash. Logs the events of the module docstring.
    """
    if restart not in ("transient", "permanent"):
        raise ValueError(f"supervisor {name!r}: supervise_one takes a transient or "
                         f"permanent child, not {restart!r}")
    if max_restarts < 0 or period <= 0:
        raise ValueError(
            f"supervisor {name!r}: need max_restarts >= 0 and period > 0, "
            f"got {max_restarts!r} and {period!r}"
        )
    restarts: tuple[float, ...] = ()
    count = 0
    while True:
        log.debug("child_started", supervisor=name, child=child)
        try:
            await start()
        except Exception as exc:
            log.warning("child_terminated", supervisor=name, child=child, exit="crash",
                        error=repr(exc), exc_info=exc)
            error: Exception | None = exc
        else:
            log.debug("child_terminated", supervisor=name, child=child, exit="normal")
            if restart == "transient":
                return
            error = None
        verdict = add_restart(restarts, anyio.current_time(), max_restarts=max_restarts,
                              period=period)
        restarts = verdict.restarts
        if not verdict.allowed:
            log.error("restart_intensity_exceeded", supervisor=name, child=child,
                      max_restarts=max_restarts, period=period)
            raise RestartIntensityExceededError(name, child, max_restarts, period) from error
        count += 1
        log.info("child_restarted", supervisor=name, child=child, restarts=count)

