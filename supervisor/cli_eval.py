"""``warden eval DIR``: replay every recorded scenario in a folder under the current config
and report which still pass (``eval.py``: the scenario file format).

Prints a table (scenario, pass or FAIL, the reason: the first divergence) or, with
``--json``, one JSON list. Exit codes: 0 every scenario passed; 1 one or more failed; 2
no such folder, no scenario in it, or a config that does not load.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import msgspec
from warden.supervisor.cli import UsageError, _settings

if TYPE_CHECKING:
    from warden.supervisor.eval import EvalResult

# eval.py (and the replay machinery) is imported when the command runs (cli_replay.py).

__all__ = ("add_eval_commands", "print_results")


def print_results(results: list[EvalResult]) -> None:
    """A table of verdicts, then a count."""
    rows = [("SCENARIO", "RESULT", "REASON")]
    rows += [(r.scenario, "pass" if r.passed else "FAIL", r.reason) for r in results]
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, verdict, reason in rows:
        print(f"{name.ljust(width[0])}  {verdict.ljust(width[1])}  {reason}".rstrip())
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} of {len(results)} scenarios pass"
          + (f", {failed} fail" if failed else ""))


def _scenarios(directory: str) -> list[Path]:
    from warden.supervisor.eval import scenario_files

    if not Path(directory).is_dir():
        raise UsageError(f"DIR {directory!r} is not a directory")
    files = scenario_files(Path(directory))
    if not files:
        raise UsageError(f"DIR {directory!r} holds no scenario (*.json); record one with "
                         "`warden replay RUN --save FILE`")
    return files


async def cmd_eval(args: argparse.Namespace) -> int:
    settings = _settings(args)
    files = await anyio.to_thread.run_sync(_scenarios, args.dir)
    from warden.supervisor.eval import evaluate

    results = [await evaluate(settings, path, timeout_s=args.timeout) for path in files]
    if args.json:
        print(msgspec.json.encode(results).decode())
    else:
        print_results(results)
    return 0 if all(r.passed for r in results) else 1


def add_eval_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                      common: argparse.ArgumentParser) -> None:
    """``warden eval DIR`` on the ``warden`` parser's subcommands."""
    parser = sub.add_parser(
        "eval", parents=[common], help="replay a folder of recorded scenarios",
        description="Replay each recorded scenario (DIR/*.json, written by `warden replay "
        "RUN --save FILE`) under the current config (--config, WARDEN_*), with recorded "
        "model replies and tool outcomes: nothing is executed. A scenario passes when the "
        "run makes the same requests, decisions and result; a changed prompt, tool list, "
        "model or policy that changes them fails it, naming the first divergence. Exit 0 "
        "when all pass, 1 when one fails.")
    parser.add_argument("dir", metavar="DIR", help="folder of scenario files (*.json)")
    parser.add_argument("--json", action="store_true", help="the verdicts as a JSON list")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="give up one scenario's replay after S seconds (default 60)")
    parser.set_defaults(func=cmd_eval, default_level="error")
