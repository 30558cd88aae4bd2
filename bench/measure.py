"""Measure one runtime on the triad workload, in a process of its own.

    python -m bench.measure --impl warden --n 1000 --latency-ms 0

Prints one JSON object: ``impl``, ``N``, ``L``, ``wall_s``, ``tasks_per_s``,
``cpu_us_per_task`` (user + system CPU of this process and every process under it —
daemon, workers, nats-server, the driver — over the measured window, divided by N),
``peak_rss_mb`` and ``rss_growth_mb`` (summed over the same processes), ``p50_ms`` /
``p99_ms`` (submit to result, per task), ``ok`` and, when not ok, ``error``.

The window opens once the runtime is up (servers started, workers connected) and
closes when the last task's result is in; then the results are checked against the
model's own tally (``bench.workload.check``). Each measurement runs in a fresh process,
started by ``bench.matrix``, so no run inherits another's heap.

An implementation is a module in ``bench/peers`` (or ``bench/warden_triad.py``) with
``open_runtime(latency_ms, workdir)``: an async context manager yielding an object with
``async run_task(task: int, goal: str) -> TaskResult`` (submit one task, wait for its
result) and ``async tallies() -> dict[int, Tally]``; and ``versions() -> dict[str, str]``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psutil
import uvloop

from bench.workload import GOAL, Tally, TaskResult, check

IMPLS = {
    "asyncio": "bench.peers.asyncio_triad:open_runtime",
    "langgraph": "bench.peers.langgraph_triad:open_runtime",
    "langgraph_sqlite": "bench.peers.langgraph_triad:open_sqlite_runtime",
    "autogen_core": "bench.peers.autogen_triad:open_runtime",
    "warden": "bench.warden_triad:open_runtime",
    "warden_2proc": "bench.warden_triad:open_two_process_runtime",
}
UVLOOP_BY_DEFAULT = frozenset({"warden", "warden_2proc"})
"""The runtimes whose own processes run on uvloop (warden's CLI does); the others run
on asyncio's default loop, as they do out of the box. ``--loop`` overrides."""


class Runtime(Protocol):
    async def run_task(self, task: int, goal: str) -> TaskResult: ...

    async def tallies(self) -> dict[int, Tally]: ...


T = TypeVar("T")
Opener = Callable[[float, Path], AbstractAsyncContextManager[Runtime]]


def load_impl(name: str) -> tuple[Opener, Callable[[], dict[str, str]]]:
    module_name, attr = IMPLS[name].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr), module.versions


class ProcessTree:
    """CPU and RSS of this process and all its descendants, with a sampler for peak RSS."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.root = psutil.Process(os.getpid())
        self.interval_s = interval_s
        self._known: list[psutil.Process] = []
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def processes(self) -> list[psutil.Process]:
        """Every process of the tree; scanned once by ``start`` (a scan of /proc costs
        milliseconds, which the sampler would otherwise add to the measured CPU)."""
        return self._known or [self.root, *self.root.children(recursive=True)]

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds of each process, by ``label:pid`` (``main`` is this process).

        The larger of two readings: user + system time, which counts threads that have
        ended but in 10 ms clock ticks; and the sum of the live threads' scheduler
        run time (``/proc/<pid>/task/*/schedstat``, in nanoseconds), which resolves a
        short run. Small N is only as exact as that.
        """
        usage: dict[str, float] = {}
        for proc in self.processes():
            try:
                times = proc.cpu_times()
                label = "main" if proc.pid == self.root.pid else proc.name()
                usage[f"{label}:{proc.pid}"] = max(times.user + times.system,
                                                   _scheduled_s(proc.pid))
            except psutil.NoSuchProcess:
                continue
        return usage

    def rss(self) -> int:
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_rss = max(self.peak_rss, self.rss())

    def start(self) -> None:
        self._known = [self.root, *self.root.children(recursive=True)]
        self.peak_rss = self.rss()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self.rss())


def _scheduled_s(pid: int) -> float:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended meanwhile
    return total / 1e9


def _percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def measure(impl: str, n: int, latency_ms: float, workdir: Path,
                  progress: bool = False) -> dict[str, object]:
    opener, versions = load_impl(impl)
    tree = ProcessTree()
    results: dict[int, TaskResult] = {}
    latencies: list[float] = []
    error: str | None = None

    async def one(runtime: Runtime, task: int) -> None:
        started = time.perf_counter()
        results[task] = await runtime.run_task(task, GOAL)
        latencies.append((time.perf_counter() - started) * 1000.0)

    async def reporter() -> None:
        while True:
            await asyncio.sleep(5)
            print(f"  {impl} N={n} L={latency_ms:g}: {len(results)}/{n} done",
                  file=sys.stderr, flush=True)

    async with opener(latency_ms, workdir) as runtime:
        tree.start()
        rss0 = tree.rss()
        cpu0 = tree.cpu_by_process()
        started = time.perf_counter()
        ticker = asyncio.create_task(reporter()) if progress else None
        try:
            async with asyncio.TaskGroup() as group:
                for task in range(n):
                    group.create_task(one(runtime, task))
        except* Exception as failures:
            error = f"{type(failures.exceptions[0]).__name__}: {failures.exceptions[0]}"
        wall = time.perf_counter() - started
        cpu1 = tree.cpu_by_process()
        by_process = {name: used - cpu0.get(name, 0.0) for name, used in cpu1.items()}
        cpu = sum(by_process.values())
        tree.stop()
        rss1 = tree.rss()
        if ticker is not None:
            ticker.cancel()
        tallies = await runtime.tallies()
    if error is None:
        error = check(results, tallies, n)
    record: dict[str, object] = {
        "impl": impl, "N": n, "L": latency_ms, "wall_s": round(wall, 3),
        "tasks_per_s": round(n / wall, 1), "cpu_us_per_task": round(cpu / n * 1e6),
        "peak_rss_mb": round(tree.peak_rss / 2**20, 1),
        "rss_growth_mb": round((rss1 - rss0) / 2**20, 1),
        "p50_ms": round(_percentile(latencies, 50), 1) if latencies else None,
        "p99_ms": round(_percentile(latencies, 99), 1) if latencies else None,
        "cpu_us_per_task_by_process": _by_label(by_process, n),
        "ok": error is None, "versions": versions(),
    }
    if error is not None:
        record["error"] = error
    return record


def run_on_loop(impl: str, main: Coroutine[Any, Any, T], loop: str | None = None
                ) -> tuple[T, str]:
    """Run ``main`` on ``loop`` (default: ``impl``'s own, see ``UVLOOP_BY_DEFAULT``);
    returns its result and the loop's name."""
    loop = loop or ("uvloop" if impl in UVLOOP_BY_DEFAULT else "asyncio")
    factory = uvloop.new_event_loop if loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main), loop


def _by_label(by_process: dict[str, float], n: int) -> dict[str, int]:
    """CPU µs per task by process label (processes of the same name summed)."""
    labels: dict[str, float] = {}
    for name, used in by_process.items():
        label = name.split(":")[0]
        labels[label] = labels.get(label, 0.0) + used
    return {label: round(used / n * 1e6) for label, used in labels.items()}


async def _main(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{args.impl}-") as tmp:
        return await measure(args.impl, args.n, args.latency_ms, Path(tmp), args.progress)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Measure one runtime on the triad workload; prints one JSON object.")
    parser.add_argument("--impl", choices=sorted(IMPLS), required=True)
    parser.add_argument("--n", type=int, required=True, help="tasks submitted at once")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="the scripted model's latency per call (0: a bare yield)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"],
                        help="event loop (default: uvloop for warden, as its CLI runs; "
                        "asyncio's own for the others)")
    parser.add_argument("--progress", action="store_true",
                        help="print progress to stderr every 5 s")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be at least 1")
    record, record["loop"] = run_on_loop(args.impl, _main(args), args.loop)
    print(json.dumps(record), flush=True)
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
