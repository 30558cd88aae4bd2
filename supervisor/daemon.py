"""The daemon: the root supervisor and everything it owns.

```
root supervisor (one_for_one)
 ├── worker.research / worker.code / worker.review   queue-group subscribers on warden.work.<role>
 ├── api                                              warden.api.* request/reply
 ├── intake                                           JetStream consumer of warden.tasks
 └── run:<id> ...                                     one per active run (temporary, dynamic)
```

Resources the tree runs on, opened in this order and closed in reverse: the embedded
nats-server (unless ``nats.url`` is set), the bus connection (JetStream streams ensured),
the journal. The running daemon writes ``daemon.json`` (its pid and the NATS URL) into the
data directory; that is how client commands find it. A ``daemon.json`` left by a killed
daemon is detected (its pid is gone) and replaced.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskStatus
from warden.actors.model import Model, build_model
from warden.actors.tools import ToolRegistry, default_registry
from warden.actors.worker import Worker
from warden.bus.connection import Bus, open_bus
from warden.bus.embedded import is_alive, open_embedded_server
from warden.config import Settings
from warden.supervisor.api import Api
from warden.supervisor.context import RunContext
from warden.supervisor.dispatch import NatsDispatcher
from warden.supervisor.errors import DaemonError, RunNotFoundError
from warden.supervisor.intake import Intake
from warden.supervisor.journal import Journal, RunState, open_journal
from warden.supervisor.restart_intensity import add_restart
from warden.supervisor.run import TERMINAL, RunSupervisor
from warden.supervisor.supervision import ChildSpec, Supervisor, open_supervisor

log = structlog.get_logger("warden.daemon")

DAEMON_FILE = "daemon.json"
RESUMABLE_BY_HAND = frozenset({"needs_human", "failed"})
JOURNAL_FILE = "journal.sqlite"


@dataclass(frozen=True)
class DaemonInfo:
    """What a started daemon tells its caller."""

    url: str
    data_dir: Path
    pid: int


def read_daemon_file(data_dir: Path) -> DaemonInfo | None:
    """The live daemon serving ``data_dir``, or ``None`` (no file, or its pid is gone)."""
    path = data_dir / DAEMON_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        info = DaemonInfo(url=str(record["url"]), data_dir=data_dir, pid=int(record["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if is_alive(info.pid) else None


def _claim_data_dir(data_dir: Path) -> None:
    path = data_dir / DAEMON_FILE
    if not path.exists():
        return
    live = read_daemon_file(data_dir)
    if live is not None and live.pid != os.getpid():
        raise DaemonError(
            f"a daemon (pid {live.pid}) already serves data dir {str(data_dir)!r} at {live.url}"
        )
    log.warning("stale_daemon_file_removed", path=str(path))
    path.unlink(missing_ok=True)


class Daemon:
    """The running tree: its resources and the root supervisor."""

    def __init__(
        self, settings: Settings, data_dir: Path, bus: Bus, journal: Journal, model: Model,
        root: Supervisor, tools: ToolRegistry,
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.bus = bus
        self.journal = journal
        self.model = model
        self.root = root
        self.context = RunContext.build(
            settings, journal, NatsDispatcher(bus, model, timeout_s=settings.models.timeout_s),
            tools, bus=bus,
        )
        self.breakers = self.context.breakers
        self._active: dict[str, anyio.CancelScope] = {}
        self._cancelling: set[str] = set()

    @property
    def active_runs(self) -> int:
        return len(self._active)

    async def start_run(self, state: RunState) -> None:
        """Start a run supervisor for a committed run, as a temporary child of the root.

        The child restarts a crashed run supervisor itself, as a replay from the journal,
        under the root's restart intensity; past it, the run is marked ``failed``.
        """
        if state.id in self._active:
            return
        scope = anyio.CancelScope()
        self._active[state.id] = scope
        supervision = self.settings.supervision

        async def run_child(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            restarts: list[float] = []
            current = state
            try:
                with scope, structlog.contextvars.bound_contextvars(run_id=state.id):
                    while True:
                        try:
                            await RunSupervisor(self.context, current).run()
                            return
                        except Exception as exc:
                            verdict = add_restart(
                                restarts, anyio.current_time(),
                                max_restarts=supervision.max_restarts, period=supervision.period_s,
                            )
                            restarts = list(verdict.restarts)
                            if not verdict.allowed:
                                log.error("restart_intensity_exceeded", child=f"run:{state.id}",
                                          error=repr(exc))
                                with anyio.CancelScope(shield=True):
                                    await self.journal.transition(
                                        state.id, "failed", error=f"run crashed: {exc!r}")
                                return
                            log.warning("child_restarted", child=f"run:{state.id}",
                                        error=repr(exc))
                            current = await self.journal.run_state(state.id) or current
            finally:
                self._active.pop(state.id, None)
                if state.id in self._cancelling:
                    self._cancelling.discard(state.id)
                    with anyio.CancelScope(shield=True):
                        await self.journal.transition(state.id, "cancelled",
                                                      error="cancelled by request")

        await self.root.start_child(ChildSpec(name=f"run:{state.id}", start=run_child,
                                              restart="temporary"))

    async def cancel_run(self, run_id: str) -> str:
        """Cancel a run that has not ended (or stopped in ``needs_human``); its new status."""
        state = await self.journal.run_state(run_id)
        if state is None:
            raise RunNotFoundError(run_id)
        if state.status in TERMINAL and state.status != "needs_human":
            raise DaemonError(f"run {run_id!r} already ended: {state.status}")
        scope = self._active.get(run_id)
        if scope is not None:
            self._cancelling.add(run_id)
            scope.cancel()
        else:
            await self.journal.transition(run_id, "cancelled", error="cancelled by request")
        return "cancelled"

    async def resume_run(self, run_id: str) -> str:
        """Go on with a run stopped in ``needs_human`` or ``failed``: a new epoch, so the
        step that stopped runs afresh while completed steps stay done."""
        state = await self.journal.run_state(run_id)
        if state is None:
            raise RunNotFoundError(run_id)
        if state.status not in RESUMABLE_BY_HAND:
            raise DaemonError(
                f"run {run_id!r} is {state.status}: only {sorted(RESUMABLE_BY_HAND)} runs "
                "can be resumed"
            )
        await self.journal.bump_epoch(run_id)
        await self.journal.transition(run_id, "queued", kind="resumed",
                                      message="resumed by request")
        fresh = await self.journal.run_state(run_id)
        assert fresh is not None
        await self.start_run(fresh)
        return "queued"


@asynccontextmanager
async def open_daemon(settings: Settings, *, api_key: str | None = None) -> AsyncIterator[Daemon]:
    """Start the whole daemon; leaving the context shuts it down, in reverse order.

    Blocks until the tree is ready (every child started, streams and journal open).
    Raises ``DaemonError`` when another daemon serves the data directory, and the
    bus's, journal's or config's own errors when those cannot start.
    """
    data_dir = Path(settings.data_dir).resolve()  # noqa: ASYNC240 - once, at start-up
    data_dir.mkdir(parents=True, exist_ok=True)
    _claim_data_dir(data_dir)
    async with AsyncExitStack() as stack:
        url = settings.nats.url
        if url is None:
            server = await stack.enter_async_context(
                open_embedded_server(data_dir, port=settings.nats.port,
                                     ready_timeout=settings.nats.connect_timeout_s)
            )
            url = server.url
        bus = await stack.enter_async_context(
            open_bus(url, name=f"warden-daemon-{os.getpid()}",
                     connect_timeout=settings.nats.connect_timeout_s)
        )
        await bus.ensure_streams()
        journal = await stack.enter_async_context(open_journal(data_dir / JOURNAL_FILE))
        model = build_model(settings, api_key=api_key)
        stack.push_async_callback(model.aclose)
        tools = default_registry()
        supervision = settings.supervision
        root = await stack.enter_async_context(
            open_supervisor(
                name="root", strategy="one_for_one",
                max_restarts=supervision.max_restarts, period=supervision.period_s,
            )
        )
        daemon = Daemon(settings, data_dir, bus, journal, model, root, tools)
        for role, role_settings in (settings.roles if settings.local_workers else {}).items():
            worker = Worker(bus, role, role_settings, model, tools, settings.sandbox,
                            data_dir=data_dir)
            await root.start_child(ChildSpec(
                name=f"worker.{role}", start=worker.run,
                shutdown_timeout=supervision.shutdown_timeout_s,
            ))
        api = Api(bus, journal, settings, daemon)
        await root.start_child(ChildSpec(name="api", start=api.run,
                                         shutdown_timeout=supervision.shutdown_timeout_s))
        unfinished = await journal.unfinished_runs()
        for state in unfinished:  # resumed before intake can redeliver their messages
            await daemon.start_run(state)
        if unfinished:
            log.info("runs_resumed", runs=len(unfinished))
        intake = Intake(bus, journal, settings, daemon.start_run)
        await root.start_child(ChildSpec(name="intake", start=intake.run,
                                         shutdown_timeout=supervision.shutdown_timeout_s))
        daemon_file = data_dir / DAEMON_FILE
        daemon_file.write_text(json.dumps({"pid": os.getpid(), "url": url}), encoding="utf-8")
        stack.callback(daemon_file.unlink, missing_ok=True)
        log.info("daemon_ready", url=url, data_dir=str(data_dir), pid=os.getpid(),
                 model=type(model).__name__)
        yield daemon
        log.info("daemon_stopping")
