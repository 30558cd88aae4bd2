"""``warden replay RUN``: re-run a recorded run against its recorded model replies and tool
outcomes, under the current config, and say whether it reaches the same decisions and
result (``replay.py``).

The run is read from the data dir's journal file, read-only (beside a running daemon, or
with none). Nothing is executed and the journal is not written: the replay runs on a
journal of its own in a temporary directory. ``--save FILE`` writes the recording as a
scenario file for ``warden eval`` (``eval.py``).

Exit codes: 0 the same decisions and result; 1 a divergence (the first is named, with
where in the run it is); 2 no journal, no such run, or a run that cannot be replayed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import msgspec
from warden.config import Settings
from warden.supervisor.cli import UsageError, _settings
from warden.supervisor.daemon import JOURNAL_FILE
from warden.supervisor.errors import ReplayError

if TYPE_CHECKING:
    from warden.supervisor.recording import Recording
    from warden.supervisor.replay import ReplayReport

# The replay machinery (recording.py, replay.py, eval.py) is imported when a command
# runs: at the top, it cost every `warden` command ~30 ms of imports.

__all__ = ("add_replay_commands", "print_report", "report_json")


def report_json(report: ReplayReport) -> dict[str, object]:
    """The report as JSON-ready data: the verdict, both ends, every divergence."""
    recorded, replayed = report.recorded.run, report.replayed.run
    return {
        "run_id": recorded.id,
        "same": report.same,
        "recorded": {"status": recorded.status, "result": recorded.result,
                     "error": recorded.error},
        "replayed": {"status": replayed.status, "result": replayed.result,
                     "error": replayed.error},
        "model_calls": len(report.replayed.model_calls),
        "tool_calls": len(report.replayed.tool_calls),
        "divergences": [msgspec.to_builtins(d) for d in report.divergences],
    }


def print_report(report: ReplayReport) -> None:
    """The verdict for a person: what was replayed, then the same, or every divergence
    (the first one first)."""
    from warden.supervisor.recording import decision_of

    recorded, replayed = report.recorded.run, report.replayed.run
    calls = report.replayed.tool_calls
    decisions: dict[str, int] = {}
    for call in calls:
        decisions[decision_of(call)] = decisions.get(decision_of(call), 0) + 1
    tally = ", ".join(f"{n} {d}" for d, n in sorted(decisions.items())) or "none"
    print(f"replay of {recorded.id}: {len(report.replayed.model_calls)} model calls, "
          f"{len(calls)} tool calls ({tally}), {len(report.replayed.steps)} steps")
    print(f"recorded  {recorded.status}" + (f": {recorded.error}" if recorded.error else ""))
    print(f"replayed  {replayed.status}" + (f": {replayed.error}" if replayed.error else ""))
    if report.same:
        print("same: the same plan, calls, decisions, steps and result")
        return
    first, *rest = report.divergences
    print(f"DIVERGED at {first.describe()}")
    for more in rest:
        print(f"  then {more.describe()}")


def _recording(settings: Settings, run_id: str) -> Recording:
    """The run's recording from the data dir's journal. Blocks."""
    from warden.supervisor.journal_recording import read_recording

    path = Path(settings.data_dir) / JOURNAL_FILE
    if not path.is_file():
        raise UsageError(f"no journal at {path} (--data-dir)")
    return read_recording(path, run_id)


async def cmd_replay(args: argparse.Namespace) -> int:
    from warden.supervisor.eval import Scenario, save_scenario
    from warden.supervisor.replay import replay_under

    settings = _settings(args)
    recording = await anyio.to_thread.run_sync(_recording, settings, args.run_id)
    try:
        report = await replay_under(settings, recording, timeout_s=args.timeout)
    except ReplayError as exc:
        raise UsageError(str(exc)) from exc
    if args.save:
        name = Path(args.save).stem
        await anyio.to_thread.run_sync(save_scenario, Path(args.save), Scenario(
            name=name, description=args.description or recording.run.text,
            recording=recording))
        print(f"saved the recording of {recording.run.id} as scenario {name!r} in "
              f"{args.save}", file=sys.stderr)
    if args.json:
        print(msgspec.json.encode(report_json(report)).decode())
    else:
        print_report(report)
    return 0 if report.same else 1


def add_replay_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                        common: argparse.ArgumentParser) -> None:
    """``warden replay RUN`` on the ``warden`` parser's subcommands."""
    parser = sub.add_parser(
        "replay", parents=[common], help="re-run a recorded run against its recorded calls",
        description="Re-run a run that ended against its recorded model replies and tool "
        "outcomes, with the real run logic and policy guards under the current config, on "
        "a temporary journal: nothing is executed, nothing is written to the data dir's "
        "journal. Compares the plan, every model request, every tool call's decision "
        "(allowed, refused by which guard), approvals, steps, status and result. Exit 0 "
        "when the same, 1 naming the first divergence. Reads the data dir's journal "
        "(a daemon may be running).")
    parser.add_argument("run_id", help="the run to replay (warden runs lists them)")
    parser.add_argument("--json", action="store_true",
                        help="the verdict and every divergence as one JSON object")
    parser.add_argument("--save", metavar="FILE",
                        help="also write the run's recording as a scenario file for "
                        "`warden eval` (its name: the file's stem)")
    parser.add_argument("--description", metavar="TEXT",
                        help="with --save: what the scenario checks (default: the task)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="give up the replay after S seconds (default 60)")
    parser.set_defaults(func=cmd_replay, default_level="error")
