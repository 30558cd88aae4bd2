"""Memory per in-flight run: N runs waiting on a slow model, RSS divided by N.

    .venv/bin/python -m bench.memory --runs 10000 [--latency-ms 20000] [--impl warden]

Opens the runtime in this process (for warden, the daemon with its workers, and its
embedded nats-server as a child process; ``--impl`` measures a peer of ``bench.measure``
the same way), records the baseline RSS of this process and every process under it,
submits ``--runs`` triad tasks without waiting for their results, and polls (every 0.2 s,
with a deadline) until all of them are in flight: for warden, every run in the journal
with status ``planning`` or ``running``; for a peer, every task with a model call done
and no result yet. Then it samples the RSS of the process tree over ~2 s and keeps the
largest. Prints one JSON object:

- ``in_flight``, ``L_ms``, ``rss_mb`` (the whole tree, MiB), ``baseline_rss_mb`` (before
  the first submission);
- ``kb_per_run``: total RSS / N, in KiB (the goal's measure: it counts the runtime itself
  as well);
- ``kb_per_run_above_baseline``: (total - baseline) / N, in KiB: what one more run costs;
- ``admit_s``: from the first submission until all were in flight; ``ok``.

The latency must be long enough that the first run does not end (8 calls of L) before the
last is admitted: 10,000 runs at L = 5 s need 2,000 model calls a second just to keep
going, more than warden's one event loop serves on this machine (about 1,100), so
admission never catches up. Hence the default of 20 s; the issue asked for 5 s.

The runs are not waited for: the submitting tasks are cancelled and
leaving the runtime stops the daemon and its nats-server.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench.measure import IMPLS, ProcessTree, Runtime, load_impl, run_on_loop
from bench.warden_triad import WardenTriad
from bench.workload import GOAL, TaskResult

DEFAULT_LATENCY_MS = 20000.0
SAMPLES = 10
SAMPLE_INTERVAL_S = 0.2
IN_FLIGHT = ("planning", "running")


def warden_in_flight(journal: Path) -> int:
    """Runs in the journal with status planning or running (read-only)."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10)
    try:
        (count,) = conn.execute("SELECT COUNT(*) FROM runs WHERE status IN (?, ?)",
                                IN_FLIGHT).fetchone()
        return int(count)
    finally:
        conn.close()


class Submitted:
    """The submitted tasks and which of them are in flight."""

    def __init__(self, runtime: Runtime, runs: int) -> None:
        self.runtime = runtime
        self.runs = runs
        self.finished: set[int] = set()
        self.tasks = [asyncio.create_task(self._one(i)) for i in range(runs)]
        self.in_flight = 0

    async def _one(self, task: int) -> TaskResult:
        try:
            return await self.runtime.run_task(task, GOAL)
        finally:
            self.finished.add(task)

    async def count(self) -> int:
        """How many are in flight now (also kept in ``in_flight``)."""
        if isinstance(self.runtime, WardenTriad):
            journal = self.runtime.daemon.journal.path
            self.in_flight = await asyncio.to_thread(warden_in_flight, journal)
        else:
            tallies = await self.runtime.tallies()
            self.in_flight = sum(1 for task, tally in tallies.items()
                                 if tally.model_calls >= 1 and task not in self.finished)
        return self.in_flight

    async def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def wait_all_in_flight(submitted: Submitted, timeout_s: float) -> float:
    """Until every run is in flight; the seconds it took."""
    started = time.perf_counter()
    while await submitted.count() < submitted.runs:
        if submitted.finished:
            took = time.perf_counter() - started
            raise RuntimeError(
                f"{len(submitted.finished)} runs ended before all {submitted.runs} were in "
                f"flight ({submitted.in_flight} in flight after {took:.0f} s, "
                f"~{submitted.in_flight / took:.0f} runs/s admitted): raise --latency-ms")
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"{submitted.in_flight} of {submitted.runs} runs in flight "
                               f"after {timeout_s:g} s")
        await asyncio.sleep(0.2)  # a poll interval, with the deadline above
    return time.perf_counter() - started


async def peak_rss(tree: ProcessTree) -> int:
    """The largest RSS of the process tree over ``SAMPLES`` samples (~2 s)."""
    peak = 0
    for _ in range(SAMPLES):
        peak = max(peak, await asyncio.to_thread(tree.rss))
        await asyncio.sleep(SAMPLE_INTERVAL_S)  # a sampling interval, not a wait for a state
    return peak


def figures(impl: str, runs: int, latency_ms: float, in_flight: int, rss: int, baseline: int
            ) -> dict[str, object]:
    return {"impl": impl, "runs": runs, "in_flight": in_flight, "L_ms": latency_ms,
            "rss_mb": round(rss / 2**20, 1), "baseline_rss_mb": round(baseline / 2**20, 1),
            "kb_per_run": round(rss / runs / 1024, 2),
            "kb_per_run_above_baseline": round((rss - baseline) / runs / 1024, 2)}


async def measure_memory(runs: int, latency_ms: float, *, impl: str = "warden",
                         timeout_s: float = 600.0) -> dict[str, object]:
    """The memory figures (see the module docstring) as a dict; ``ok`` says if it held."""
    opener, _ = load_impl(impl)
    tree = ProcessTree()
    record: dict[str, object] = {"impl": impl, "runs": runs, "L_ms": latency_ms}
    with tempfile.TemporaryDirectory(prefix=f"bench-memory-{impl}-") as tmp:
        async with opener(latency_ms, Path(tmp)) as runtime:
            baseline = await asyncio.to_thread(tree.rss)
            submitted = Submitted(runtime, runs)
            try:
                admit = await wait_all_in_flight(submitted, timeout_s)
                rss = await peak_rss(tree)
                await submitted.count()
                record.update(figures(impl, runs, latency_ms, submitted.in_flight, rss,
                                      baseline), admit_s=round(admit, 2))
                record["ok"] = submitted.in_flight == runs
                if not record["ok"]:
                    record["error"] = f"{submitted.in_flight} of {runs} in flight at the end"
            except (TimeoutError, RuntimeError) as exc:
                record.update(in_flight=submitted.in_flight, ok=False, error=str(exc))
            finally:
                await submitted.cancel()
    return record


async def _main(args: argparse.Namespace) -> dict[str, object]:
    record = await measure_memory(args.runs, args.latency_ms, impl=args.impl,
                                  timeout_s=args.timeout)
    quiet_teardown(asyncio.get_running_loop(), args.impl)
    return record


def quiet_teardown(loop: asyncio.AbstractEventLoop, impl: str) -> None:
    """Count, not print, the errors of tasks a runtime leaves to be cancelled at exit
    (autogen-core logs a traceback for each message in flight): one line says how many."""
    errors: list[str] = []

    def handler(_: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if not errors:
            atexit.register(lambda: print(
                f"bench.memory: {len(errors)} errors in {impl}'s tasks cancelled at exit, "
                f"after the measure (first: {errors[0]})", file=sys.stderr))
        errors.append(str(context.get("exception") or context.get("message")))

    loop.set_exception_handler(handler)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10000, help="runs in flight (default 10000)")
    parser.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS,
                        help="scripted model latency per call; long enough that no run ends "
                        f"before all are in flight (default {DEFAULT_LATENCY_MS:g})")
    parser.add_argument("--impl", choices=sorted(IMPLS), default="warden",
                        help="the runtime to measure (default warden)")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="deadline for all runs to be in flight (default 600)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    record, record["loop"] = run_on_loop(args.impl, _main(args))
    print(json.dumps(record), flush=True)
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
