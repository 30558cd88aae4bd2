"""``warden watch RUN``: re-attach to a run in progress, show where it stands, then follow its
events (``warden.runs.<run>.events``) with ``submit --wait``'s progress display until it
ends, and print it as ``warden show`` does.

The event subscription opens first and the run is asked for after (``follow_run``'s
``subscribed``), so no event between the two is missed; the feed replays the run's
stored events from its start, so the display is the run's whole story. A run that has
already ended is printed at once.

Exit codes, as ``submit --wait``: 0 the run succeeded; 1 it ended otherwise; 2 no such
run, no daemon; 3 ``--timeout`` expired before it ended.
"""

from __future__ import annotations

import argparse
import sys

import anyio
from warden.supervisor.cli import (
    _open_client,
    _print_run,
    _settings,
    _show,
    daemon_id_for,
    follow_run,
)

__all__ = ("add_watch_commands",)


async def cmd_watch(args: argparse.Namespace) -> int:
    settings = _settings(args)
    run_id = args.run_id
    async with _open_client(settings, "client", "warden-cli") as bus:
        daemon_id = await daemon_id_for(bus, settings, args.daemon)

        async def where_it_stands() -> str:
            run = await _show(bus, daemon_id, run_id, settings)  # unknown: UsageError
            if not args.json:
                done = sum(step.status in ("succeeded", "skipped") for step in run.steps)
                print(f"{run_id}  {run.status}: {done} of {len(run.steps)} steps done, "
                      f"{run.tokens} tokens, ${run.cost_usd:.4f}  (following its events)",
                      file=sys.stderr, flush=True)
            return run.status

        try:
            with anyio.fail_after(args.timeout):
                status = await follow_run(bus, run_id, progress=not args.json,
                                          label=f"{run_id}  ", subscribed=where_it_stands)
        except TimeoutError:
            print(f"warden: run {run_id} did not end within {args.timeout:g}s",
                  file=sys.stderr)
            return 3
        _print_run(await _show(bus, daemon_id, run_id, settings), as_json=args.json)
    return 0 if status == "succeeded" else 1


def add_watch_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                       common: argparse.ArgumentParser) -> None:
    """``warden watch RUN`` on the ``warden`` parser's subcommands."""
    parser = sub.add_parser(
        "watch", parents=[common], help="follow a run in progress to its end",
        description="Re-attach to a run: print where it stands, then its events as "
        "`submit --wait` shows them (from its start, then live) until it ends, then the "
        "run as `warden show` prints it. A run that ended is printed at once. Exit 0 if "
        "it succeeded, 1 if it ended otherwise, 3 if --timeout expired first.")
    parser.add_argument("run_id", help="the run to follow (warden runs lists them)")
    parser.add_argument("--json", action="store_true",
                        help="no progress display; the ended run as JSON")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="give up waiting after S seconds (default 600; exit 3)")
    parser.set_defaults(func=cmd_watch, default_level="warning")
