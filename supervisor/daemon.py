"""The daemon: the root supervisor and everything it owns.

```
root supervisor (one_for_one)
 ├── worker.research / worker.code / worker.review   queue-group subscribers on warden.work.<role>
 ├── runs             supervisor (one_for_one); starts with the journal's unfinished runs
 │    └── run:<id>    supervisor per active run (temporary; its own restart intensity)
 │         └── run    the run supervisor (transient: a crash restarts it, a replay)
 ├── api              warden.api.<daemon_id>.* (a nats.micro service named "warden")
 └── intake           JetStream consumer of warden.tasks, while it holds the intake lease
```

A run's own supervisor restarts a crashed run supervisor as a replay from the journal
(it re-reads ``journal.run_state``), within ``settings.supervision``'s restart
intensity. Past it, that supervisor gives up and the run ends ``failed`` ("run crashed:
…"); the ``runs`` subtree never restarts a run's supervisor (``temporary``), so one
run's crashes never reach the daemon. A run ended from outside its run supervisor
(cancelled, crashed past its intensity) ends through ``Daemon.finish``, which commits
the terminal status and emits it on the event stream (``warden.runs.<run>.events`` and
``warden.done.<run>``), like every terminal transition.

Resources the tree runs on, opened in this order and closed in reverse: the embedded
nats-server (unless ``nats.url`` is set), the bus connection (JetStream streams ensured),
the journal. The tree stops in reverse: intake and api first (no new runs), then the runs
(cut off where they stand, resumed at the next start), then the workers. The running
daemon writes ``daemon.json`` (mode 0600: its pid, the NATS URL, its daemon id and the
paths of the client, operator and worker seed files) into the data directory; that is how
client commands find it, connect and address it. A ``daemon.json`` left by a killed daemon
is detected (its pid is gone) and replaced.

Identities (``bus.identities``): with the embedded server, the daemon makes sure
``<data_dir>/credentials/`` holds an nkey seed per identity, starts the server with their
public keys and permissions (nobody else is admitted), connects as ``daemon``, and gives
its local workers their own connection as ``worker``, so they hold in-process only the
rights a remote worker has. With ``nats.url`` set, it connects with the configured
credentials (``nats.creds``, ``nats.nkey_seed``, ...) and its local workers share that
connection.

The daemon id (``daemon-id`` in the data directory, made at the first start) names this
daemon on the bus: in its API subjects (``warden.api.<daemon_id>.<verb>``), its service
metadata, and the intake lease. It belongs to the data directory, not the process, so a
restarted daemon answers on the same subjects and takes its own intake lease back at once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import secrets
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskStatus
from warden.actors.isolation import ensure_private_dir
from warden.actors.model import Model
from warden.actors.tools import ToolRegistry
from warden.actors.tracing import open_tracing, provider_of
from warden.actors.worker import Worker
from warden.bus import subjects
from warden.bus.connection import Bus, open_bus
from warden.bus.credentials import Credentials
from warden.bus.embedded import is_alive, open_embedded_server
from warden.bus.identities import (
    IDENTITIES,
    Identity,
    ensure_seeds,
    inbox_prefix,
    public_key,
    render_authorization,
)
from warden.bus.wire import ApprovalInfo, DaemonHealth, encoder
from warden.config import Settings
from warden.config.settings import NatsSettings
from warden.supervisor.anomaly_watch import AnomalyWatch
from warden.supervisor.api import Api
from warden.supervisor.approvals import ApprovalBoard
from warden.supervisor.context import RunContext
from warden.supervisor.dashboard_feed import LiveFeed
from warden.supervisor.decision_intake import DecisionIntake
from warden.supervisor.dispatch import NatsDispatcher
from warden.supervisor.errors import (
    DaemonError,
    IllegalTransitionError,
    RestartIntensityExceededError,
    RunNotFoundError,
)
from warden.supervisor.events import EventStream, standard_observers
from warden.supervisor.http_routes import http_routes
from warden.supervisor.intake import Intake
from warden.supervisor.journal import Journal, RunState, open_journal
from warden.supervisor.metrics import Metrics
from warden.supervisor.policy import policy_guards
from warden.supervisor.preflight import expand_allowlists, open_tool_registry, preflight
from warden.supervisor.run import RunSupervisor
from warden.supervisor.run_states import CANCELLABLE, RESUMABLE_BY_HAND, TERMINAL, RunStatus
from warden.supervisor.spend import DailySpend
from warden.supervisor.supervision import ChildSpec, Supervisor, open_supervisor, supervise_one
from warden.supervisor.web import WebServer
from warden.supervisor.webhooks import approval_notifier, open_webhook_sender

from warden import __version__

__all__ = ("CREDENTIALS_DIR", "DAEMON_FILE", "DAEMON_ID_FILE", "JOURNAL_FILE", "Daemon",
           "DaemonInfo", "daemon_id_of", "open_daemon", "read_daemon_file", "service_version")

log = structlog.get_logger("warden.daemon")

DAEMON_FILE = "daemon.json"
DAEMON_ID_FILE = "daemon-id"
JOURNAL_FILE = "journal.sqlite"
CREDENTIALS_DIR = "credentials"
_SHARED_IDENTITIES: tuple[Identity, ...] = ("client", "operator", "worker")
"""The identities whose seed paths ``daemon.json`` names; never the daemon's own."""
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")


@dataclass(frozen=True)
class DaemonInfo:
    """What a running daemon tells local clients through ``daemon.json``."""

    url: str
    data_dir: Path
    pid: int
    seeds: Mapping[str, Path] = field(default_factory=dict)
    """Seed files of the client, operator and worker identities (embedded server only)."""
    daemon_id: str | None = None
    """``None`` in a ``daemon.json`` written before daemons had ids."""
    http: str | None = None
    """The HTTP server's base URL (``/metrics``, the dashboard); ``None`` when it is off."""

    def credentials(self, identity: Identity, settings: NatsSettings) -> Credentials:
        """How to connect as ``identity``: its seed from ``daemon.json`` when the daemon
        named one, else the configured credentials (a daemon on an external server)."""
        return _connect_as(identity, self.seeds, settings)


def _connect_as(identity: Identity, seeds: Mapping[str, Path],
                settings: NatsSettings) -> Credentials:
    seed = seeds.get(identity)
    if seed is None:
        return Credentials.from_settings(settings, identity)
    return Credentials(nkey_seed=seed, inbox_prefix=inbox_prefix(identity))


def read_daemon_file(data_dir: Path) -> DaemonInfo | None:
    """The live daemon serving ``data_dir``, or ``None`` (no file, or its pid is gone)."""
    path = data_dir / DAEMON_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        seeds = {str(k): Path(v) for k, v in dict(record.get("credentials", {})).items()}
        daemon_id = record.get("daemon_id")
        info = DaemonInfo(url=str(record["url"]), data_dir=data_dir, pid=int(record["pid"]),
                          seeds=seeds, daemon_id=None if daemon_id is None else str(daemon_id),
                          http=None if record.get("http") is None else str(record["http"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return info if is_alive(info.pid) else None


def _write_daemon_file(path: Path, record: Mapping[str, object]) -> None:
    # 0600 from the first byte: it tells whoever reads it how to connect as client,
    # operator and worker. Renamed into place, so a reader never sees half of it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(record, file)
    tmp.replace(path)


@dataclass(frozen=True)
class _Identities:
    """How the daemon and its local workers connect, and what the server admits."""

    daemon: Credentials
    worker: Credentials | None
    """``None``: local workers share the daemon's connection (external server)."""
    authorization: str | None
    """The embedded server's ``authorization`` block; ``None`` for an external server."""
    seeds: Mapping[str, Path]
    """Every identity's seed file, by identity (embedded server only)."""


def _identities(settings: Settings, data_dir: Path) -> _Identities:
    if settings.nats.url is not None:
        return _Identities(daemon=Credentials.from_settings(settings.nats, "daemon"),
                           worker=None, authorization=None, seeds={})
    directory = data_dir / CREDENTIALS_DIR
    seeds = ensure_seeds(directory)
    return _Identities(
        daemon=Credentials.for_identity(directory, "daemon"),
        worker=Credentials.for_identity(directory, "worker"),
        authorization=render_authorization({i: public_key(seeds[i]) for i in IDENTITIES}),
        seeds={str(identity): path for identity, path in seeds.items()},
    )


def daemon_id_of(data_dir: Path) -> str:
    """The id of the daemon of ``data_dir``: read from ``daemon-id``, made there (``d`` and
    12 hex digits) at the first start. Raises ``OSError`` when the file cannot be written."""
    path = data_dir / DAEMON_ID_FILE
    try:
        value = path.read_text(encoding="utf-8").strip()
        if subjects.is_valid_id(value):
            return value
        log.warning("daemon_id_replaced", path=str(path), invalid=value[:40])
    except FileNotFoundError:
        pass
    value = f"d{secrets.token_hex(6)}"
    partial = path.with_suffix(".tmp")
    partial.write_text(value + "\n", encoding="utf-8")
    partial.replace(path)
    return value


def service_version() -> str:
    """The package version as ``nats.micro`` wants it (semver; ``0.0.0`` if it is not)."""
    return __version__ if _SEMVER.match(__version__) else "0.0.0"


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
    """The running tree: its resources, the root supervisor and the runs subtree."""

    def __init__(
        self, settings: Settings, data_dir: Path, bus: Bus, journal: Journal, model: Model,
        root: Supervisor, tools: ToolRegistry, events: EventStream,
        *, seeds: Mapping[str, Path] | None = None, daemon_id: str = "d0",
        feed: LiveFeed | None = None, spend: DailySpend | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self._seeds = dict(seeds or {})
        self.daemon_id = daemon_id
        self.intake: Intake | None = None
        self.bus = bus
        self.journal = journal
        self.model = model
        self.root = root
        self.events = events
        dispatcher = NatsDispatcher(bus, model, timeout_s=settings.models.timeout_s)
        operator = self._seeds.get("operator")
        self.approvals = ApprovalBoard(
            journal, settings.approvals.timeout_s,
            operator_key=public_key(operator) if operator else settings.approvals.operator_key,
            announce=self._announce,
        )
        """Approval requests and decisions (``approvals.py``); ``approvals.notify`` is the
        webhook hook."""
        self.context = RunContext.build(
            settings, journal, dispatcher, tools, events=events,
            interceptors=policy_guards(settings, tools, journal, dispatcher,
                                       board=self.approvals),
            approvals=self.approvals, spend=spend,
        )
        self.breakers = self.context.breakers
        self._runs: Supervisor | None = None
        self.http_url: str | None = None
        """The HTTP server's base URL (``/metrics``, the dashboard); ``None`` when off."""
        self.feed = feed or LiveFeed()
        """The dashboard's live run events (an observer of ``events``, ``dashboard_feed``)."""
        self.metrics: Metrics | None = None
        """The daemon's metrics (``/metrics``); ``None`` with ``[metrics] enabled = false``
        or without the HTTP server."""

    async def _announce(self, request: ApprovalInfo) -> None:
        await self.bus.publish(subjects.approvals(request.run_id), encoder.encode(request))

    def credentials(self, identity: Identity) -> Credentials:
        """How a client of this daemon connects as ``identity``: the generated seed
        (embedded server), else the configured credentials. Pure."""
        return _connect_as(identity, self._seeds, self.settings.nats)

    def health(self) -> DaemonHealth:
        """The ``ping`` reply: this daemon's identity, version and health. Never blocks."""
        intake = self.intake
        return DaemonHealth(
            daemon_id=self.daemon_id, version=__version__, data_dir=str(self.data_dir),
            pid=os.getpid(), active_runs=self.active_runs,
            open_breakers=sorted(name for name, breaker in self.breakers.items()
                                 if breaker.state != "closed"),
            intake="starting" if intake is None else intake.state,
            intake_holder=None if intake is None else intake.held_by,
        )

    @property
    def active_runs(self) -> int:
        """Runs that have a supervisor in the runs subtree now."""
        return 0 if self._runs is None else self._runs.statistics().children

    @property
    def runs(self) -> Supervisor:
        """The runs subtree. Raises ``DaemonError`` while it is not running."""
        if self._runs is None:
            raise DaemonError("the daemon's runs subtree is not running (starting or stopping)")
        return self._runs

    async def serve_runs(self, *, task_status: TaskStatus[None]) -> None:
        """The ``runs`` subtree: a child of the root. Starts a supervisor for every
        unfinished run in the journal, then signals started; runs until stopped.

        Its children are ``temporary``, so it never restarts one and never gives up.
        """
        supervision = self.settings.supervision
        async with open_supervisor(
            name="runs", strategy="one_for_one",
            max_restarts=supervision.max_restarts, period=supervision.period_s,
        ) as runs:
            self._runs = runs
            try:
                # Before intake starts: a committed run is resumed before its message
                # could be redelivered.
                unfinished = await self.journal.unfinished_runs()
                for state in unfinished:
                    await self.start_run(state)
                if unfinished:
                    log.info("runs_resumed", runs=len(unfinished))
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self._runs = None

    async def start_run(self, state: RunState) -> None:
        """Start a supervisor for the committed run ``state`` in the runs subtree; its one
        child is the run supervisor. Returns once it started (not when the run ends).

        A supervisor the run still has (one that is ending) is stopped first: a run
        supervisor always starts as a replay of what the journal holds, so two starts
        cannot repeat a call or an effect. A cancellation point. Raises ``DaemonError``
        when the runs subtree is not running.
        """
        runs = self.runs
        name = f"run:{state.id}"
        with contextlib.suppress(LookupError):
            await runs.terminate_child(name)
        await runs.start_child(ChildSpec(
            name=name, start=functools.partial(self._supervise_run, state),
            restart="temporary", shutdown_timeout=math.inf,
        ))

    async def _supervise_run(self, state: RunState, *, task_status: TaskStatus[None]) -> None:
        """The supervisor of one run (a child of ``runs``, ``supervise_one``): restarts
        its run supervisor after a crash, as a replay; past its restart intensity, ends
        the run ``failed``."""
        run_id = state.id
        supervision = self.settings.supervision
        crashes: list[Exception] = []
        starts = 0
        task_status.started()

        async def run_supervisor() -> None:
            nonlocal starts
            starts += 1
            current = state
            if starts > 1:  # a restart: replay from what the journal holds now
                await self.journal.sync()
                current = await self.journal.run_state(run_id) or state
            try:
                if current.status not in TERMINAL:
                    await RunSupervisor(self.context, current).run()
            except IllegalTransitionError as exc:
                if exc.old not in TERMINAL:
                    crashes.append(exc)
                    raise
                # Ended from outside meanwhile (cancelled): nothing left to do.
                log.info("run_ended_elsewhere", run_id=run_id, status=exc.old)
            except Exception as exc:
                crashes.append(exc)
                raise

        try:
            with structlog.contextvars.bound_contextvars(run_id=run_id):
                await supervise_one(
                    f"run:{run_id}", "run", run_supervisor, restart="transient",
                    max_restarts=supervision.max_restarts, period=supervision.period_s,
                )
        except RestartIntensityExceededError:
            await self.finish(run_id, "failed", f"run crashed: {crashes[-1]!r}")

    async def finish(self, run_id: str, status: RunStatus, reason: str) -> str:
        """End a run from outside its run supervisor: commit the terminal ``status``
        (``reason`` as its error, the run's recorded tokens and cost) and emit it, which
        publishes it on ``warden.runs.<run>.events`` and ``warden.done.<run>``.

        Shielded from cancellation. Returns the status the run has now: ``status``, or
        the one it had already ended in (then nothing is written or published). Raises
        ``ValueError`` for a status that is not terminal, ``RunNotFoundError``,
        ``JournalError``.
        """
        if status not in TERMINAL:
            raise ValueError(f"finish needs a terminal status, got {status!r}")
        with anyio.CancelScope(shield=True):
            tokens, cost_usd = await self.journal.spent(run_id)
            try:
                await self.events.transition(run_id, status, message=reason, error=reason,
                                             tokens=tokens, cost_usd=cost_usd)
            except IllegalTransitionError as exc:
                log.info("run_already_ended", run_id=run_id, status=exc.old, refused=status)
                return str(exc.old)
        return status

    async def cancel_run(self, run_id: str) -> str:
        """Cancel a run that has not ended (or stopped in ``needs_human``): stop its
        supervisor, if it has one, then end it ``cancelled``; returns ``"cancelled"``.

        Blocks until the run supervisor stopped. Raises ``RunNotFoundError``, and
        ``DaemonError`` when the run already ended.
        """
        state = await self.journal.run_state(run_id)
        if state is None:
            raise RunNotFoundError(run_id)
        if state.status not in CANCELLABLE:
            raise DaemonError(f"run {run_id!r} already ended: {state.status}")
        if self._runs is not None:
            with contextlib.suppress(LookupError):  # it has no supervisor (ended, or queued)
                await self._runs.terminate_child(f"run:{run_id}")
        status = await self.finish(run_id, "cancelled", "cancelled by request")
        if status != "cancelled":
            raise DaemonError(f"run {run_id!r} already ended: {status}")
        return status

    async def resume_run(self, run_id: str) -> str:
        """Go on with a run stopped in ``needs_human`` or ``failed``: a new epoch, so the
        step that stopped runs afresh while completed steps stay done. Returns
        ``"queued"``. Raises ``RunNotFoundError``, and ``DaemonError`` when the run is
        in a status that cannot be resumed."""
        state = await self.journal.run_state(run_id)
        if state is None:
            raise RunNotFoundError(run_id)
        if state.status not in RESUMABLE_BY_HAND:
            raise DaemonError(
                f"run {run_id!r} is {state.status}: only {sorted(RESUMABLE_BY_HAND)} runs "
                "can be resumed"
            )
        await self.journal.bump_epoch(run_id)
        try:
            await self.events.transition(run_id, "queued", message="resumed by request")
        except IllegalTransitionError as exc:  # resumed or cancelled meanwhile
            raise DaemonError(f"run {run_id!r} cannot be resumed: {exc}") from exc
        fresh = await self.journal.run_state(run_id)
        assert fresh is not None
        await self.start_run(fresh)
        return "queued"


@asynccontextmanager
async def open_daemon(settings: Settings, *, api_key: str | None = None) -> AsyncIterator[Daemon]:
    """Start the whole daemon; leaving the context shuts it down, in reverse order.

    Blocks until the tree is ready (every child started, streams and journal open).
    Raises ``ConfigError`` (before starting anything) for settings the code refuses
    (``supervisor/preflight.py``), ``DaemonError`` when another daemon serves the data
    directory, and the bus's or journal's own errors when those cannot start.
    """
    data_dir = Path(settings.data_dir).resolve()  # noqa: ASYNC240 - once, at start-up
    ensure_private_dir(data_dir)  # 0700: the sandbox may not read the journal or credentials
    _claim_data_dir(data_dir)
    async with AsyncExitStack() as stack:
        # Config errors before a NATS server or a supervisor exists: one ConfigError. The
        # MCP servers (if any) start first, their listing being part of the tools, and
        # stop last; without local workers this process never calls them: listed, stopped.
        tools = await stack.enter_async_context(
            open_tool_registry(settings, keep_open=settings.local_workers))
        settings = expand_allowlists(settings, tools)
        model = preflight(settings, tools, api_key=api_key)
        stack.push_async_callback(model.aclose)
        # Off unless asked for (actors/tracing.py); closed after the runs stopped, so
        # their spans are ended, then flushed.
        await stack.enter_async_context(open_tracing(
            settings.tracing, service="warden", provider=provider_of(model)))
        web = None
        if settings.http.enabled:
            # Bound before anything runs: a port in use stops the start-up, naming http.port.
            web = WebServer(settings.http)
            stack.callback(web.close)
        # Checked before anything starts; stops after the runs (a late request's notice
        # still gets its bounded delivery).
        webhooks = await stack.enter_async_context(
            open_webhook_sender(settings.approvals.webhooks))
        identities = _identities(settings, data_dir)
        daemon_id = daemon_id_of(data_dir)
        url = settings.nats.url
        if url is None:
            server = await stack.enter_async_context(
                open_embedded_server(data_dir, port=settings.nats.port,
                                     ready_timeout=settings.nats.connect_timeout_s,
                                     authorization=identities.authorization)
            )
            url = server.url
        bus = await stack.enter_async_context(
            open_bus(url, name=f"warden-daemon-{os.getpid()}",
                     connect_timeout=settings.nats.connect_timeout_s,
                     credentials=identities.daemon)
        )
        await bus.ensure_streams()
        worker_bus = bus
        if identities.worker is not None and settings.local_workers:
            # Opened before the root supervisor, so it closes after the workers stopped.
            worker_bus = await stack.enter_async_context(
                open_bus(url, name=f"warden-workers-{os.getpid()}",
                         connect_timeout=settings.nats.connect_timeout_s,
                         credentials=identities.worker)
            )
        journal = await stack.enter_async_context(open_journal(data_dir / JOURNAL_FILE))
        supervision = settings.supervision
        root = await stack.enter_async_context(
            open_supervisor(
                name="root", strategy="one_for_one",
                max_restarts=supervision.max_restarts, period=supervision.period_s,
            )
        )
        feed = LiveFeed()  # the dashboard's live events: an observer only if it is served
        # Metrics (served on /metrics: only with the HTTP server) and anomaly flags, two more
        # observers (supervisor/metrics.py, anomaly_watch.py).
        metrics = (Metrics(tools=tools.names(), roles=settings.roles)
                   if settings.metrics.enabled and web is not None else None)
        anomalies = (AnomalyWatch(journal, settings.anomaly,
                                  on_flag=None if metrics is None else metrics.flagged)
                     if settings.anomaly.enabled else None)
        events = EventStream(journal, (*standard_observers(
            journal, bus, publish_calls=settings.nats.publish_call_events),
            *((feed,) if web is not None else ()),
            *(o for o in (metrics, anomalies) if o is not None)))
        spend = await DailySpend.load(journal, settings.budgets)  # today's, from the journal
        daemon = Daemon(settings, data_dir, bus, journal, model, root, tools, events,
                        seeds=identities.seeds, daemon_id=daemon_id, feed=feed, spend=spend)
        daemon.metrics = metrics
        if settings.approvals.webhooks:
            daemon.approvals.notify = approval_notifier(webhooks)
        for role, role_settings in (settings.roles if settings.local_workers else {}).items():
            worker = Worker(worker_bus, role, role_settings, model, tools, settings.sandbox,
                            data_dir=data_dir, models=settings.models)
            await root.start_child(ChildSpec(
                name=f"worker.{role}", start=worker.run,
                shutdown_timeout=supervision.shutdown_timeout_s,
            ))
        # Before the runs: decisions published while no daemon ran are applied first.
        await root.start_child(ChildSpec(name="approvals",
                                         start=DecisionIntake(bus, daemon.approvals).run,
                                         shutdown_timeout=supervision.shutdown_timeout_s))
        if anomalies is not None:  # before the runs, stopped after them: sees every ending
            await root.start_child(ChildSpec(name="anomalies", start=anomalies.run,
                                             shutdown_timeout=supervision.shutdown_timeout_s))
        await root.start_child(ChildSpec(name="runs", start=daemon.serve_runs,
                                         shutdown_timeout=math.inf))
        api = Api(bus, journal, settings, daemon, events, daemon_id=daemon_id, spend=spend,
                  version=service_version(),
                  metadata={"daemon_id": daemon_id, "data_dir": str(data_dir),
                            "pid": str(os.getpid()), "host": socket.gethostname()})
        await root.start_child(ChildSpec(name="api", start=api.run,
                                         shutdown_timeout=supervision.shutdown_timeout_s))
        intake = Intake(bus, journal, settings, daemon.start_run, events, holder=daemon_id,
                        note=f"(pid {os.getpid()} on {socket.gethostname()}, data dir "
                             f"{data_dir})")
        daemon.intake = intake
        await root.start_child(ChildSpec(name="intake", start=intake.run,
                                         shutdown_timeout=supervision.shutdown_timeout_s))
        if web is not None:
            await root.start_child(ChildSpec(
                name="http", start=functools.partial(web.run, http_routes(daemon)),
                shutdown_timeout=supervision.shutdown_timeout_s))
            daemon.http_url = web.url
        daemon_file = data_dir / DAEMON_FILE
        _write_daemon_file(daemon_file, {
            "pid": os.getpid(), "url": url, "daemon_id": daemon_id, "http": daemon.http_url,
            "credentials": {i: str(identities.seeds[i]) for i in _SHARED_IDENTITIES
                            if i in identities.seeds},
        })
        stack.callback(daemon_file.unlink, missing_ok=True)
        log.info("daemon_ready", daemon_id=daemon_id, url=url, data_dir=str(data_dir),
                 pid=os.getpid(),
                 model=type(model).__name__)
        yield daemon
        log.info("daemon_stopping")
