"""The ``warden`` command line.

    warden up                      run the daemon in the foreground (Ctrl-C / SIGTERM stops it)
    warden submit "TEXT" [--wait]  submit a task over NATS; --wait follows it to the end;
                                   --dry-run: see what it would do, side effects not executed
    warden runs                    list runs
    warden show RUN_ID             one run with its steps
    warden watch RUN_ID            follow a run in progress to its end (cli_watch.py)
    warden replay RUN_ID           re-run a recorded run against its recorded calls, compare
    warden eval DIR                replay a folder of recorded scenarios (cli_eval.py)
    warden demo                    start a daemon in-process, run the demo tasks, print a table
    warden worker --role ROLE      serve roles' steps from another process or machine
    warden cancel RUN_ID           cancel a run that has not ended
    warden resume RUN_ID           resume a run stopped in needs_human or failed
    warden dlq [retry ID]          list dead-lettered task messages, or re-submit one
    warden approvals               list pending approval requests (cli_approvals.py)
    warden approve ID / deny ID    decide one, as the operator (deny needs --reason)
    warden nats-permissions        the permissions block for a NATS cluster's server config

Client commands find the daemon through ``daemon.json`` in the data directory
(``--data-dir`` / ``WARDEN_DATA_DIR``): its NATS URL, the seed it names (``client``;
``operator`` for ``dlq`` and approvals; ``worker`` for ``warden worker``) and its daemon
id, which every API subject carries (``warden.api.<daemon_id>.<verb>``), so they talk to
that daemon and no other. With ``--nats URL`` they take credentials from config or ``WARDEN_NATS_*``
(README, "Security model") and ``--daemon ID``, or ask ``$SRV.PING.warden`` and use the
only daemon that answers (several: an error listing them). Without a daemon, ``runs`` and
``show`` read the data directory's journal (read-only) and say so on stderr.
Exit codes: 0 success (also when stdout's reader left early); 1 a run ended other than
``succeeded``; 2 bad usage, bad config, no daemon or an unreachable bus; 3 timed out;
130 interrupted. Every error of the user's is one line on stderr, never a traceback,
also when it was raised inside a task group (``exit_code``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from pathlib import Path

import anyio
import msgspec
from warden.bus import subjects
from warden.bus.connection import Bus, open_bus
from warden.bus.credentials import Credentials
from warden.bus.errors import BusError
from warden.bus.identities import (
    PLACEHOLDER_KEYS,
    Identity,
    ensure_seeds,
    public_key,
    render_authorization,
)
from warden.bus.wire import (
    MAX_PAGE,
    DeadLetterList,
    DeadLetterRetry,
    ErrorReply,
    RunList,
    RunQuery,
    RunsQuery,
    RunSummary,
    TaskSubmission,
    encoder,
    event_decoder,
    reply_decoder,
)
from warden.config import TENANT_PATTERN, ConfigError, Settings, load_settings
from warden.supervisor.cli_calls import all_calls, print_calls
from warden.supervisor.daemon import JOURNAL_FILE, DaemonInfo, open_daemon, read_daemon_file
from warden.supervisor.dry_run import dry_run_id
from warden.supervisor.errors import DaemonError, JournalError, RunNotFoundError
from warden.supervisor.intake import Rejection, check_submission
from warden.supervisor.journal import open_journal_reader
from warden.supervisor.logs import configure_logging
from warden.supervisor.preflight import expand_allowlists, open_tool_registry, preflight
from warden.supervisor.run_states import TERMINAL

from warden import __version__

DEMO_TASKS: tuple[str, ...] = (
    "Write fizzbuzz(n) in Python, with pytest tests.",
    "Write slugify(title) that turns titles into URL slugs, with pytest tests.",
    "Write a word frequency counter top_words(text, n), with pytest tests.",
)


class UsageError(Exception):
    """Bad usage or an unreachable daemon: exit code 2, message on stderr."""


def new_run_id() -> str:
    """A sortable, unique run id: milliseconds since the epoch, then randomness."""
    return f"r-{int(time.time() * 1000):x}-{secrets.token_hex(3)}"


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[tuple[str, ...], object] = {}
    if getattr(args, "data_dir", None):
        overrides[("data_dir",)] = args.data_dir
    if getattr(args, "nats", None):
        overrides[("nats", "url")] = args.nats
    return load_settings(getattr(args, "config", None), overrides=overrides)


def _connection(settings: Settings, identity: Identity) -> tuple[str, Credentials]:
    """Where and how to connect as ``identity``: ``--nats URL`` with the configured
    credentials (``nats.creds``, ``WARDEN_NATS_NKEY_SEED``, ...), else the local
    daemon's ``daemon.json`` (its URL and the identity's seed file)."""
    if settings.nats.url:
        return settings.nats.url, Credentials.from_settings(settings.nats, identity)
    data_dir = Path(settings.data_dir).resolve()
    info = read_daemon_file(data_dir)
    if info is None:
        raise UsageError(
            f"no daemon is running for data dir {str(data_dir)!r}: start one with "
            f"`warden up --data-dir {settings.data_dir}` or pass --nats URL"
        )
    return info.url, info.credentials(identity, settings.nats)


def _open_client(settings: Settings, identity: Identity, name: str) -> AsyncContextManager[Bus]:
    url, credentials = _connection(settings, identity)
    return open_bus(url, name=name, credentials=credentials)


def _describe(daemon_id: str, metadata: dict[str, str]) -> str:
    return (f"{daemon_id} (pid {metadata.get('pid', '?')} on {metadata.get('host', '?')}, "
            f"data dir {metadata.get('data_dir', '?')})")


async def daemon_id_for(bus: Bus, settings: Settings, chosen: str | None = None) -> str:
    """The id of the daemon a client command addresses: ``chosen`` (``--daemon``), else
    the one ``daemon.json`` of the data dir names (when it serves on ``bus``'s URL), else
    the only daemon answering ``$SRV.PING.warden``. Raises ``UsageError`` when none
    answers, or when several do (listing them)."""
    if chosen is not None:
        if not subjects.is_valid_id(chosen):
            raise UsageError(f"--daemon {chosen!r} is not a daemon id ([A-Za-z0-9_-])")
        return chosen
    data_dir = Path(settings.data_dir).resolve()  # noqa: ASYNC240 - once, a local file
    info: DaemonInfo | None = read_daemon_file(data_dir)
    if info is not None and info.daemon_id and info.url == bus.url:
        return info.daemon_id
    found = await bus.discover(subjects.SERVICE_PING, timeout=settings.nats.request_timeout_s)
    daemons = {f.metadata["daemon_id"]: dict(f.metadata) for f in found
               if f.metadata.get("daemon_id")}
    if len(daemons) == 1:
        return next(iter(daemons))
    if not daemons:
        raise UsageError(f"no warden daemon answers on {bus.url}")
    listed = "; ".join(_describe(d, m) for d, m in sorted(daemons.items()))
    raise UsageError(f"{len(daemons)} warden daemons answer on {bus.url}: {listed}. "
                     "Choose one with --daemon ID (or its --data-dir)")


async def _request(
    bus: Bus, daemon_id: str, verb: subjects.ApiVerb, payload: msgspec.Struct, timeout: float
) -> object:
    reply = reply_decoder.decode(await bus.request(subjects.api(daemon_id, verb),
                                                   encoder.encode(payload), timeout=timeout))
    if isinstance(reply, ErrorReply):
        raise UsageError(reply.error)
    return reply


async def _show(bus: Bus, daemon_id: str, run_id: str, settings: Settings) -> RunSummary:
    run = await _request(bus, daemon_id, "show", RunQuery(run_id=run_id),
                         settings.nats.request_timeout_s)
    assert isinstance(run, RunSummary)
    return run


def _print_run(run: RunSummary, *, as_json: bool) -> None:
    if as_json:
        print(encoder.encode(run).decode())
    else:
        print_run(run)


def _money(value: float) -> str:
    return f"${value:.4f}"


def print_runs(runs: Sequence[RunSummary], *, out: object = None) -> None:
    """A table of runs: id, status, steps, tokens, cost, seconds, text."""
    rows = [("RUN", "STATUS", "STEPS", "TOKENS", "COST", "SECS", "TASK")]
    for run in runs:
        seconds = max(0.0, run.updated_at - run.created_at)
        rows.append((
            run.id, run.status, str(len(run.steps)) if run.steps else "-", str(run.tokens),
            _money(run.cost_usd), f"{seconds:.1f}", run.text.replace("\n", " ")[:48],
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    if runs:
        total = sum(r.cost_usd for r in runs)
        tokens = sum(r.tokens for r in runs)
        print(f"{len(runs)} runs, {tokens} tokens, {_money(total)}")


def print_run(run: RunSummary) -> None:
    print(f"run      {run.id}")
    print(f"status   {run.status}")
    print(f"tenant   {run.tenant}")
    print(f"task     {run.text}")
    print(f"tokens   {run.tokens}   cost {_money(run.cost_usd)}")
    if run.error:
        print(f"error    {run.error}")
    for flag in run.anomalies:  # supervisor/anomaly.py
        print(f"anomaly  {flag.kind}: {flag.detail}")
    if run.dry_run:
        print_intercepted(run)
    for step in run.steps:
        print(f"  step {step.index} [{step.role}] {step.status}, {step.turns} turns, "
              f"{step.tokens} tokens, {_money(step.cost_usd)}: {step.instruction}")
        if step.output:
            print("    " + step.output.strip().replace("\n", "\n    ")[:600])
    if run.result:
        print("result:")
        print("  " + run.result.strip().replace("\n", "\n  "))


def print_intercepted(run: RunSummary) -> None:
    """A dry run's header and what it would have done, one call a paragraph."""
    print("dry run  yes: its side-effecting tool calls were not executed")
    calls = run.intercepted
    print(f"would have done ({len(calls)} call{'s' if len(calls) != 1 else ''}):")
    for call in calls:
        arguments = encoder.encode(call.arguments).decode()
        print(f"  step {call.step} turn {call.turn}  {call.tool} {arguments[:300]}")
        if call.decision == "intercepted":
            would = "simulated" if call.simulated else "not simulated"
            print(f"    intercepted: {call.reason}; not executed ({would})")
            print("    would have returned: " + call.output.strip().replace("\n", "\n      ")[:600])
        else:
            print(f"    refused by {call.by}: a real run would have been refused too")
            print("    " + call.output.strip().replace("\n", "\n    ")[:600])


async def follow_run(bus: Bus, run_id: str, *, progress: bool, label: str = "",
                     subscribed: Callable[[], Awaitable[str]] | None = None) -> str:
    """Print a run's events until it reaches a terminal status; returns that status.

    ``subscribed``: called once the subscription is open (so no event after it is
    missed), returning the run's status then; a terminal one is returned at once
    (``warden watch`` of a run that ended). Blocks; callers bound it with a deadline.
    """
    async with bus.follow(subjects.run_events(run_id)) as events:
        if subscribed is not None:
            status = await subscribed()
            if status in TERMINAL:
                return status
        async for data in events:
            event = event_decoder.decode(data)
            if progress:
                where = f" step {event.step} [{event.role}]" if event.step is not None else ""
                text = event.message.replace("\n", " ")[:90]
                print(f"{label}{event.status:<16}{where} {event.kind}: {text}", file=sys.stderr)
            if event.status in TERMINAL:
                return event.status
    raise DaemonError(f"event stream of run {run_id!r} ended early")


async def submit_and_follow(
    bus: Bus, task: TaskSubmission, *, wait: bool, progress: bool, timeout: float
) -> str:
    """Publish ``task`` on the tasks stream; with ``wait``, follow it to its end."""
    assert task.id is not None
    if not wait:
        await bus.publish_task(encoder.encode(task), msg_id=task.id)
        return "queued"
    status = "queued"
    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            done = anyio.Event()

            async def watch() -> None:
                nonlocal status
                status = await follow_run(bus, task.id or "", progress=progress,
                                          label=f"{task.id}  ")
                done.set()
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            await bus.publish_task(encoder.encode(task), msg_id=task.id)
            await done.wait()
    return status


def check_tenant(tenant: str | None) -> None:
    """Raise ``UsageError`` naming ``--tenant`` when ``tenant`` is not a tenant's name
    (``TENANT_PATTERN``, as the daemon checks it); ``None`` (not given) passes."""
    if tenant is not None and not re.fullmatch(TENANT_PATTERN, tenant):
        raise UsageError(f"--tenant {tenant!r} must be 1-64 characters of [A-Za-z0-9_.-]")


def check_task(task: TaskSubmission, *, max_task_bytes: int) -> None:
    """Return if the daemon would take ``task`` in, checked before it is published.

    The text must not be empty and, encoded, fit ``limits.max_task_bytes``; a budget must
    be a finite number greater than 0 (JSON has no NaN or infinity: encoded, they would
    become ``null``, the configured budget, not what was asked). Then the intake's own
    rules (``check_submission``), so the CLI refuses whatever the daemon would reject.
    Raises ``UsageError`` naming the argument.
    """
    if not task.text.strip():
        raise UsageError("TEXT must not be empty")
    budget = task.budget_usd
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise UsageError(f"--budget {budget!r} must be a finite number greater than 0")
    check_tenant(task.tenant)
    data = encoder.encode(task)
    if len(data) > max_task_bytes:
        raise UsageError(
            f"TEXT is too large: the task is {len(data)} bytes, more than "
            f"limits.max_task_bytes ({max_task_bytes})"
        )
    checked = check_submission(data, max_bytes=max_task_bytes, fallback_id=task.id or "-")
    if isinstance(checked, Rejection):
        raise UsageError(checked.error)


# -- commands ------------------------------------------------------------------------


async def cmd_up(args: argparse.Namespace) -> int:
    settings = _settings(args)
    async with open_daemon(settings, api_key=os.environ.get("ANTHROPIC_API_KEY")) as daemon:
        print(f"warden up: NATS {daemon.bus.url}, data dir {daemon.data_dir}, "
              f"model {type(daemon.model).__name__}  (Ctrl-C to stop)", file=sys.stderr)
        if daemon.http_url is not None:
            print(f"warden up: dashboard {daemon.http_url}/  metrics {daemon.http_url}/metrics",
                  file=sys.stderr)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                print(f"warden: {signal.Signals(signum).name}, shutting down", file=sys.stderr)
                break
    print("warden: stopped", file=sys.stderr)
    return 0


async def cmd_submit(args: argparse.Namespace) -> int:
    settings = _settings(args)
    run_id = args.id or new_run_id()
    if not subjects.is_valid_id(run_id):
        raise UsageError(f"--id {run_id!r} must be 1-128 characters of [A-Za-z0-9_-]")
    if args.dry_run:  # the daemon would map it so: the id followed must be the run's
        run_id = dry_run_id(run_id)
    task = TaskSubmission(id=run_id, text=args.text, scenario=args.scenario,
                          budget_usd=args.budget, dry_run=args.dry_run, tenant=args.tenant)
    check_task(task, max_task_bytes=settings.limits.max_task_bytes)
    async with _open_client(settings, "client", "warden-cli") as bus:
        daemon_id = await daemon_id_for(bus, settings, args.daemon)
        if args.id is not None:  # a chosen id may be taken: say so, submit nothing
            reply = reply_decoder.decode(await bus.request(
                subjects.api(daemon_id, "show"), encoder.encode(RunQuery(run_id=run_id)),
                timeout=settings.nats.request_timeout_s))
            if isinstance(reply, RunSummary):
                print(f"warden: run {run_id} already exists ({reply.status}); the text "
                      "given was not submitted", file=sys.stderr)
                task = msgspec.structs.replace(task, text=reply.text)
        try:
            status = await submit_and_follow(bus, task, wait=args.wait,
                                             progress=not args.json, timeout=args.timeout)
        except TimeoutError:
            print(f"warden: run {run_id} did not finish within {args.timeout:g}s",
                  file=sys.stderr)
            return 3
        if not args.wait:
            print(run_id)
            return 0
        _print_run(await _show(bus, daemon_id, run_id, settings), as_json=args.json)
        return 0 if status == "succeeded" else 1


def _journal_without_daemon(settings: Settings) -> Path | None:
    """The journal of the data dir when no daemon runs for it (and no ``--nats`` was
    given), after saying so on stderr; ``None`` when a daemon should be asked."""
    if settings.nats.url:
        return None
    data_dir = Path(settings.data_dir).resolve()
    path = data_dir / JOURNAL_FILE
    if read_daemon_file(data_dir) is not None or not path.exists():
        return None
    _say(f"no daemon is running for data dir {str(data_dir)!r}: read from its journal")
    return path


async def cmd_runs(args: argparse.Namespace) -> int:
    """Pages through the daemon's runs (each reply is bounded): the newest ``--limit``,
    or ``--all``, older than ``--before``; prints the cursor of the rest on stderr."""
    settings = _settings(args)
    if args.limit < 1:
        raise UsageError(f"--limit {args.limit} must be at least 1")
    wanted = None if args.all else args.limit
    runs: list[RunSummary] = []
    cursor: str | None = args.before
    journal_path = _journal_without_daemon(settings)
    if journal_path is not None:
        if cursor is not None:
            raise UsageError("--before pages a daemon's listing; with no daemon running, "
                             "use --limit or --all")
        async with open_journal_reader(journal_path) as journal:
            runs = await journal.list_runs(limit=wanted or 2**62, status=args.status)
    else:
        async with _open_client(settings, "client", "warden-cli") as bus:
            daemon_id = await daemon_id_for(bus, settings, args.daemon)
            while wanted is None or len(runs) < wanted:
                page = MAX_PAGE if wanted is None else min(MAX_PAGE, wanted - len(runs))
                listing = await _request(bus, daemon_id, "runs",
                                         RunsQuery(limit=page, status=args.status,
                                                   before=cursor),
                                         settings.nats.request_timeout_s)
                assert isinstance(listing, RunList)
                runs[:0] = listing.runs  # older pages go first: newest last, as printed
                cursor = listing.next_before
                if cursor is None or not listing.runs:
                    break
    if args.json:
        print(encoder.encode(runs).decode())
    else:
        print_runs(runs)
    if cursor is not None and not args.all:
        print(f"(older runs: warden runs --before {cursor}, or --all)", file=sys.stderr)
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    journal_path = _journal_without_daemon(settings)
    if journal_path is not None:
        async with open_journal_reader(journal_path) as journal:
            run = await journal.get_run(args.run_id)
            calls = await journal.calls(args.run_id) if args.calls else []
        if run is None:
            raise UsageError(f"no run {args.run_id!r}")
        _print_run(run, as_json=args.json)
        if args.calls:
            print_calls(calls, as_json=args.json)
        return 0
    # Every prompt and tool output is the operator's to read (``calls`` verb).
    async with _open_client(settings, "operator" if args.calls else "client",
                            "warden-cli") as bus:
        daemon_id = await daemon_id_for(bus, settings, args.daemon)
        _print_run(await _show(bus, daemon_id, args.run_id, settings), as_json=args.json)
        if args.calls:
            timeout = settings.nats.request_timeout_s
            calls = await all_calls(args.run_id, lambda query: _request(
                bus, daemon_id, "calls", query, timeout))
            print_calls(calls, as_json=args.json)
    return 0


async def cmd_control(args: argparse.Namespace) -> int:
    """``cancel`` and ``resume``: ask the daemon, print the run as it is now."""
    settings = _settings(args)
    verb: subjects.ApiVerb = "cancel" if args.command == "cancel" else "resume"
    async with _open_client(settings, "client", "warden-cli") as bus:
        daemon_id = await daemon_id_for(bus, settings, args.daemon)
        run = await _request(bus, daemon_id, verb, RunQuery(run_id=args.run_id),
                             settings.nats.request_timeout_s)
    assert isinstance(run, RunSummary)
    print(f"{run.id}: {run.status}")
    return 0


async def cmd_dlq(args: argparse.Namespace) -> int:
    settings = _settings(args)
    async with _open_client(settings, "operator", "warden-cli") as bus:
        daemon_id = await daemon_id_for(bus, settings, args.daemon)
        if args.action == "retry":
            if args.id is None:
                raise UsageError("`warden dlq retry` needs the dead letter's ID")
            run = await _request(bus, daemon_id, "dlq_retry", DeadLetterRetry(id=args.id),
                                 settings.nats.request_timeout_s)
            assert isinstance(run, RunSummary)
            print(f"dead letter {args.id} re-submitted as {run.id}")
            return 0
        listing = await _request(bus, daemon_id, "dlq", RunsQuery(),
                                 settings.nats.request_timeout_s)
    assert isinstance(listing, DeadLetterList)
    if args.json:
        print(encoder.encode(listing.letters).decode())
        return 0
    for letter in listing.letters:
        retried = " (retried)" if letter.retried_at else ""
        print(f"{letter.id}  seq {letter.stream_seq}  {letter.deliveries} deliveries{retried}: "
              f"{letter.reason}\n    {letter.preview[:100]}")
    print(f"{len(listing.letters)} dead letters")
    return 0


async def cmd_worker(args: argparse.Namespace) -> int:
    from warden.actors.tracing import open_tracing, provider_of
    from warden.actors.worker import Worker
    from warden.supervisor.supervision import ChildSpec, open_supervisor

    settings = _settings(args)
    roles = list(dict.fromkeys(args.role))
    unknown = [role for role in roles if role not in settings.roles]
    if unknown:
        raise UsageError(f"--role {unknown[0]!r} is not one of {sorted(settings.roles)}")
    async with open_tool_registry(settings) as tools:  # MCP servers: stopped on leaving
        settings = expand_allowlists(settings, tools)
        model = preflight(settings, tools, api_key=os.environ.get("ANTHROPIC_API_KEY"),
                          roles=roles)
        data_dir = Path(settings.data_dir).absolute()  # noqa: ASYNC240 - once, at start-up
        name = "-".join(roles)
        async with (
            open_tracing(settings.tracing, service="warden-worker",
                         provider=provider_of(model)),
            _open_client(settings, "worker", f"warden-worker-{name}") as bus,
        ):
            workers = [Worker(bus, role, settings.roles[role], model, tools, settings.sandbox,
                              data_dir=data_dir, models=settings.models) for role in roles]
            specs = [ChildSpec(name=worker.name, start=worker.run) for worker in workers]
            async with open_supervisor(
                specs, name=f"worker-{name}", max_restarts=settings.supervision.max_restarts,
                period=settings.supervision.period_s,
            ):
                served = ", ".join(subjects.work(role) for role in roles)
                print(f"warden worker {name}: serving {served} on {bus.url}", file=sys.stderr,
                      flush=True)
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
        await model.aclose()
        return 0


async def cmd_nats_permissions(args: argparse.Namespace) -> int:
    """Print the ``authorization`` block for a nats-server config: with ``--keys DIR``,
    the public keys of the seeds there (made if missing, mode 0600), else stand-ins."""
    keys = dict(PLACEHOLDER_KEYS)
    if args.keys:
        seeds = ensure_seeds(Path(args.keys))
        keys = {identity: public_key(path) for identity, path in seeds.items()}
    print(render_authorization(keys), end="")
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    settings = _settings(args)
    async with open_daemon(settings, api_key=os.environ.get("ANTHROPIC_API_KEY")) as daemon:
        print(f"warden demo: daemon in-process, NATS {daemon.bus.url}, data dir "
              f"{daemon.data_dir}, model {type(daemon.model).__name__}", file=sys.stderr)
        if daemon.http_url is not None:
            print(f"warden demo: dashboard {daemon.http_url}/", file=sys.stderr)
        async with open_bus(daemon.bus.url, name="warden-demo",
                            credentials=daemon.credentials("client")) as bus:
            tasks = [TaskSubmission(id=new_run_id(), text=text) for text in DEMO_TASKS]
            statuses: dict[str, str] = {}

            async def one(task: TaskSubmission) -> None:
                statuses[task.id or ""] = await submit_and_follow(
                    bus, task, wait=True, progress=True, timeout=math.inf
                )

            try:
                # One deadline outside the group: it expires as one TimeoutError, not a
                # group of one per task (test_demo_timeout_is_one_line_and_exit_3).
                with anyio.fail_after(args.timeout):
                    async with anyio.create_task_group() as tg:
                        for task in tasks:
                            tg.start_soon(one, task)
            except TimeoutError:
                print(f"warden demo: runs did not finish within {args.timeout:g}s",
                      file=sys.stderr)
                return 3
            runs = [await _show(bus, daemon.daemon_id, task.id or "", settings)
                    for task in tasks]
    print()
    print_runs(runs)
    for run in runs:
        print(f"\n{run.id} ({run.status}, {run.tokens} tokens, {_money(run.cost_usd)}):")
        print("  " + (run.result or run.error or "").strip().replace("\n", "\n  "))
    ok = all(r.status == "succeeded" for r in runs)
    print("\ndemo: every run succeeded" if ok else "\ndemo: some runs did not succeed")
    return 0 if ok else 1


# -- parsing -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="data directory (default .warden, or WARDEN_DATA_DIR)")
    common.add_argument("--nats", metavar="URL",
                        help="use this NATS server instead of the embedded one / daemon.json")
    common.add_argument("--config", metavar="FILE", help="TOML settings (or WARDEN_CONFIG)")
    common.add_argument("--daemon", metavar="ID", default=None,
                        help="with --nats: the daemon to address (default: the data dir's "
                        "daemon, or the only one on the server)")
    common.add_argument("--log-level", default=None,
                        choices=["debug", "info", "warning", "error"], help="log level")
    common.add_argument("--log-json", action="store_true", help="logs as JSON lines")

    parser = argparse.ArgumentParser(
        prog="warden",
        description="warden: supervised, durable, bounded LLM agents over NATS.",
        epilog="Start with `warden demo`, or `warden up` in one shell and "
               "`warden submit \"...\" --wait` in another.",
    )
    parser.add_argument("--version", action="version", version=f"warden {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", parents=[common], help="run the daemon in the foreground",
                        description="Run the daemon: embedded nats-server (unless --nats), "
                        "journal, workers, intake. Ctrl-C or SIGTERM shuts it down.")
    up.set_defaults(func=cmd_up, default_level="info")

    submit = sub.add_parser("submit", parents=[common], help="submit a task",
                            description="Publish a task on warden.tasks. With --wait, show "
                            "its progress until it ends, then the result.")
    submit.add_argument("text", help="what to do")
    submit.add_argument("--wait", action="store_true", help="follow the run until it ends")
    submit.add_argument("--json", action="store_true", help="print the finished run as JSON")
    submit.add_argument("--scenario", help="scripted model scenario (fizzbuzz, slugify, ...)")
    submit.add_argument("--budget", type=float, metavar="USD", help="this run's cost budget")
    submit.add_argument("--id", help="run id to use (default: generated)")
    submit.add_argument("--tenant", help="whose run it is: its spend counts at that tenant's "
                        "day budget (1-64 of [A-Za-z0-9_.-]; default: the 'default' tenant)")
    submit.add_argument("--dry-run", action="store_true",
                        help="intercept every side-effecting tool call: record it, answer "
                        "it with its simulation, do not execute it (the run's id is "
                        "dry-<id>; `warden show` lists what it would have done)")
    submit.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="give up waiting after S seconds (default 600)")
    submit.set_defaults(func=cmd_submit, default_level="warning")

    runs = sub.add_parser("runs", parents=[common], help="list runs")
    runs.add_argument("--json", action="store_true", help="a JSON list of runs")
    runs.add_argument("--status", help="only runs with this status")
    runs.add_argument("--limit", type=int, default=100, help="newest N runs (default 100)")
    runs.add_argument("--all", action="store_true", help="every run, page by page")
    runs.add_argument("--before", metavar="CURSOR", help="runs older than this cursor")
    runs.set_defaults(func=cmd_runs, default_level="warning")

    show = sub.add_parser("show", parents=[common], help="show one run")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="the run as JSON")
    show.add_argument("--calls", action="store_true",
                      help="also every prompt, response and tool call, with tokens, cost and "
                           "timing (as the operator identity; with --json: one JSON object "
                           "per call after the run)")
    show.set_defaults(func=cmd_show, default_level="warning")

    demo = sub.add_parser("demo", parents=[common], help="run the demo tasks in-process",
                          description="Start a daemon in-process on the embedded defaults, "
                          "submit the demo tasks concurrently, print each result with its "
                          "tokens and cost. Exits 0 only if every run succeeded.")
    demo.add_argument("--timeout", type=float, default=300.0, metavar="S")
    demo.set_defaults(func=cmd_demo, default_level="warning")

    for name, text in (("cancel", "cancel a run that has not ended"),
                       ("resume", "resume a run stopped in needs_human or failed")):
        control = sub.add_parser(name, parents=[common], help=text, description=text + ".")
        control.add_argument("run_id")
        control.set_defaults(func=cmd_control, default_level="warning")

    dlq = sub.add_parser("dlq", parents=[common], help="list or retry dead-lettered tasks",
                         description="Task messages delivered more than intake.max_deliveries "
                         "times are kept as dead letters. `warden dlq` lists them; "
                         "`warden dlq retry ID` re-submits one.")
    dlq.add_argument("action", nargs="?", choices=["list", "retry"], default="list")
    dlq.add_argument("id", nargs="?", type=int, help="the dead letter to retry")
    dlq.add_argument("--json", action="store_true", help="a JSON list")
    dlq.set_defaults(func=cmd_dlq, default_level="warning")

    from warden.supervisor.cli_approvals import add_approval_commands  # it imports this one

    add_approval_commands(sub, common)

    from warden.supervisor.cli_audit import add_audit_commands  # it imports this one

    add_audit_commands(sub, common)

    from warden.supervisor.cli_replay import add_replay_commands  # it imports this one

    add_replay_commands(sub, common)

    from warden.supervisor.cli_eval import add_eval_commands  # it imports this one

    add_eval_commands(sub, common)

    from warden.supervisor.cli_watch import add_watch_commands  # it imports this one

    add_watch_commands(sub, common)

    from warden.supervisor.cli_spend import add_spend_commands  # it imports this one

    add_spend_commands(sub, common)

    worker = sub.add_parser("worker", parents=[common], help="serve roles' steps",
                            description="Join the roles' queue groups from this process "
                            "(with local_workers = false, the daemon runs none itself).")
    worker.add_argument("--role", required=True, action="append",
                        help="research, code or review; repeat to serve several")
    worker.set_defaults(func=cmd_worker, default_level="info")

    permissions = sub.add_parser(
        "nats-permissions", help="print the NATS permissions block for a server config",
        description="Print the `authorization` block that gives warden's identities "
        "(daemon, worker, client, operator) their least-privilege permissions, to paste "
        "into a nats-server config. With --keys DIR, one nkey seed per identity is made "
        "in DIR (if missing; mode 0600) and the block names their public keys.")
    permissions.add_argument("--keys", metavar="DIR",
                             help="directory of the identities' seeds (<identity>.nk)")
    permissions.set_defaults(func=cmd_nats_permissions, default_level="warning",
                             log_level=None, log_json=False)
    return parser


_USER_ERRORS: tuple[type[Exception], ...] = (
    UsageError, ConfigError, DaemonError, JournalError, RunNotFoundError, BusError,
)
"""Errors that are the user's to act on: one line on stderr, exit 2, no traceback."""


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``: itself, or the leaves of an exception group (what
    a task group raises when one of its tasks fails)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _say(message: str) -> None:
    """One line on stderr; nothing if stderr is gone too (``2>&1 | head``)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"warden: {message}", file=sys.stderr, flush=True)


def _stdout_gone() -> int:
    # The reader of our stdout went away (`warden runs | head -1`): that is its choice,
    # not an error. Point stdout at /dev/null so the interpreter's last flush cannot
    # fail again ("Exception ignored ... BrokenPipeError"), and exit 0 quietly.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 0


def exit_code(exc: BaseException) -> int | None:
    """The exit code for ``exc`` escaping a command, after saying why in one line; or
    ``None`` when it is not one the user can act on (a defect: its traceback is shown).

    2 for a usage, config, daemon or bus error; 3 for a deadline (``--timeout``); 130
    for Ctrl-C; 0 when stdout's reader went away. An exception group (from a task group)
    is judged by its leaves, so a ``ConfigError`` raised in a task is still one line.
    """
    leaves = _leaves(exc)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        return 130
    if any(isinstance(leaf, BrokenPipeError) for leaf in leaves):
        return _stdout_gone()
    if all(isinstance(leaf, _USER_ERRORS) for leaf in leaves):
        _say(str(leaves[0]))
        return 2
    if all(isinstance(leaf, TimeoutError) for leaf in leaves):
        _say("timed out (--timeout)")
        return 3
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``warden`` console script; returns the exit code.

    Exit codes: 0 success; 1 a run ended other than ``succeeded``; 2 bad usage, bad
    config, no daemon or an unreachable bus (one line on stderr); 3 a ``--timeout``
    expired; 130 interrupted (Ctrl-C).
    """
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level or args.default_level, json=args.log_json)
    try:
        code: int = anyio.run(args.func, args, backend_options={"use_uvloop": True})
        sys.stdout.flush()  # here, where a gone reader is caught, not at interpreter exit
    except BaseException as exc:
        known = exit_code(exc)
        if known is None:
            raise
        return known
    return code


if __name__ == "__main__":
    sys.exit(main())
