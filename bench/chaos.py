"""The long chaos: hundreds of daemon deaths while ledger runs go through (``make chaos``).

Starts ``warden up`` processes on one data directory and kills each at a random moment:
mostly by SIGKILL from outside while runs are in flight, some while the daemon starts and
resumes, some by its own hand at a named crash point (``WARDEN_CRASH_AT``). ``--runs``
ledger runs are submitted in waves (a first wave, then a few to every daemon) so there is
always work in flight. After the last kill one daemon finishes every run and is stopped
with SIGTERM; then the invariants of ``tests/chaos/harness.py`` are checked: every run
terminal exactly once and succeeded, no duplicate ledger key, three ledger lines per run,
``PRAGMA integrity_check`` ok, no process left behind.

Prints one JSON line per kill, then one JSON object of figures (kills, runs, succeeded,
duplicate keys, integrity, wall seconds, ...). Exits 0 only if every invariant holds; it
passes or fails on nothing else (no timing).

    .venv/bin/python bench/chaos.py --kills 200 --runs 200 [--seed N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

# After the line above: the harness lives with the chaos tests, not in an installed package.
from warden.supervisor.logs import configure_logging

from tests.chaos.harness import (
    ChaosError,
    ChaosPlan,
    Cluster,
    chaos_seed,
    kill_line,
    run_chaos,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="daemon deaths (default 200)")
    parser.add_argument("--runs", type=int, default=200, help="ledger runs (default 200)")
    parser.add_argument("--first-wave", type=int, default=None,
                        help="runs submitted to the first daemon (default a quarter)")
    parser.add_argument("--latency-ms", type=float, default=500.0,
                        help="scripted model latency (default 500: a run outlives a few "
                        "daemons)")
    parser.add_argument("--max-delay", type=float, default=1.5,
                        help="longest life of a daemon after its wave, seconds (default 1.5)")
    parser.add_argument("--crash-point-share", type=float, default=0.25,
                        help="share of daemons started with WARDEN_CRASH_AT (default 0.25)")
    parser.add_argument("--startup-kill-share", type=float, default=0.1,
                        help="share of daemons killed while starting (default 0.1)")
    parser.add_argument("--finish-timeout", type=float, default=300.0,
                        help="seconds the last daemon gets to finish every run (default 300)")
    parser.add_argument("--seed", type=int, default=None, help="default: CHAOS_SEED or random")
    parser.add_argument("--keep", metavar="DIR",
                        help="work in DIR and keep it (default: a temporary directory)")
    args = parser.parse_args()
    if args.kills < 1 or args.runs < 1:
        parser.error("--kills and --runs must be at least 1")

    configure_logging("error")  # this process's bus client; the daemons log to files
    seed = args.seed if args.seed is not None else chaos_seed()
    plan = ChaosPlan(
        kills=args.kills, run_ids=tuple(f"ch-{i:05d}" for i in range(args.runs)),
        first_wave=args.first_wave if args.first_wave is not None else max(1, args.runs // 4),
        latency_ms=args.latency_ms, max_delay=args.max_delay,
        crash_point_share=args.crash_point_share, startup_kill_share=args.startup_kill_share,
        finish_timeout=args.finish_timeout,
    )
    print(json.dumps({"seed": seed, "kills": plan.kills, "runs": len(plan.run_ids),
                      "first_wave": plan.first_wave, "latency_ms": plan.latency_ms}),
          flush=True)
    with tempfile.TemporaryDirectory(prefix="warden-chaos-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        with Cluster(root) as cluster:
            try:
                outcome = run_chaos(cluster, plan, seed=seed,
                                    progress=lambda record: print(kill_line(record), flush=True))
            except ChaosError as exc:
                print(json.dumps({"seed": seed, "ok": False, "error": str(exc)}), flush=True)
                return 1
        print(json.dumps(outcome.figures()), flush=True)
        if not outcome.ok:
            print(outcome.explain(), file=sys.stderr)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
