"""The benchmark matrix: every runtime on the triad workload, at every N and L, some reps.

    .venv/bin/python -m bench.matrix                      # the full matrix (hours)
    .venv/bin/python -m bench.matrix --impls asyncio warden --sizes 1 100 --reps 1 \\
        --latencies 0 --skip-recovery --skip-memory --out-dir /tmp/mx --no-readme

For each rep, each latency L and each size N, every implementation is measured once, in
an order rotated by (rep + position), so drift of the machine (heat, other load) hits all
of them alike. Each measurement is a fresh process, ``python -m bench.measure``, with a
time limit; its stdout is the JSON result, its stderr (progress) goes through to ours. A
timeout, a crash or output that is not JSON is recorded as a run ``ok: false`` with the
error. Once an implementation times out at some N and L, its larger N at that L are
recorded as failed without being run (they would only time out again).

Then, unless skipped, the recovery measure (``bench.recovery``: the daemon SIGKILLed with
runs in flight, and restarted) and the memory measure (``bench.memory``: KB per in-flight
run), each also in a process of its own, so this process's heap (matplotlib) is not
counted.

The results go to ``<out-dir>/<date>.json``, rewritten after every run so a crash keeps
what was measured; then ``bench.report`` writes ``<date>.md`` and ``<date>.png`` beside it
and refreshes the README section between ``<!-- bench:start -->`` and
``<!-- bench:end -->``. Exits 0 only if every run (and recovery and memory) was ok.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from warden.bus.embedded import nats_server_binary

from bench.measure import IMPLS
from bench.report import METRICS, ReportError, update_readme, write_report

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TIMEOUT_S = 1200.0
KILL_WAIT_S = 10.0

Row = dict[str, Any]


@dataclass(frozen=True)
class Config:
    """One measurement of the matrix."""

    rep: int  # 1-based
    latency: int
    n: int
    impl: str

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.impl, self.n, self.latency)


LARGE_N = 10_000


def plan(impls: Sequence[str], sizes: Sequence[int], latencies: Sequence[int], reps: int,
         large_reps: int | None = None) -> list[Config]:
    """Every run in order: rep, then L, then N, the impls rotated by (rep + position).
    N of 10,000 and more get ``large_reps`` reps (default ``reps``)."""
    configs: list[Config] = []
    position = 0
    large = reps if large_reps is None else large_reps
    for rep in range(reps):
        for latency in latencies:
            for n in sizes:
                if n >= LARGE_N and rep >= large:
                    continue
                shift = (rep + position) % len(impls)
                rotated = [*impls[shift:], *impls[:shift]]
                configs += [Config(rep + 1, latency, n, impl) for impl in rotated]
                position += 1
    return configs


# --- one measurement in a child process ----------------------------------------------


def stop_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc`` and every process under it, each by pid, and reap ``proc``."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.kill()
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
    proc.wait()
    psutil.wait_procs(children, timeout=KILL_WAIT_S)


def run_module(args: list[str], timeout_s: float) -> tuple[Row | None, str | None]:
    """Run ``python -m <args>`` from the repository root; its last stdout line as JSON.

    Returns (record, None) or (None, error). Its stderr goes to ours. Its temporary files
    go to a directory of ours (``TMPDIR``), removed after it, also when it was killed.
    """
    with tempfile.TemporaryDirectory(prefix="bench-matrix-") as tmp:
        proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO_ROOT,
                                env={**os.environ, "TMPDIR": tmp}, stdout=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True)
        try:
            stdout, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_tree(proc)
            return None, f"timed out after {timeout_s:g} s"
    return parse_record(stdout, proc.returncode)


def parse_record(stdout: str, returncode: int) -> tuple[Row | None, str | None]:
    """The last non-empty line of ``stdout`` as a JSON object, or the error."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None, f"exit status {returncode}, no output"
    try:
        record = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None, f"exit status {returncode}, output not JSON: {lines[-1][:200]!r}"
    if not isinstance(record, dict):
        return None, f"exit status {returncode}, output not a JSON object"
    return record, None


def measure_one(config: Config, timeout_s: float) -> Row:
    """One run of the matrix, as the results file records it."""
    args = ["bench.measure", "--impl", config.impl, "--n", str(config.n),
            "--latency-ms", str(config.latency), "--progress"]
    started = time.perf_counter()
    record, error = run_module(args, timeout_s)
    row: Row = record if record is not None else {"ok": False, "error": error}
    row.update(impl=config.impl, N=config.n, L=config.latency, rep=config.rep,
               elapsed_s=round(time.perf_counter() - started, 1))
    row.setdefault("ok", False)
    return row


# --- the results object --------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> Row:
    return {"cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "cpu": cpu_model(), "python": platform.python_version(),
            "platform": platform.platform()}


def nats_server_version() -> str:
    """``nats-server --version`` of the binary the embedded server runs, e.g. ``v2.10.22``."""
    try:
        done = subprocess.run([str(nats_server_binary()), "--version"], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    words = (done.stdout or done.stderr).split()
    return words[-1] if words else "unknown"


def merged_versions(runs: Sequence[Row], nats_server: str) -> dict[str, str]:
    versions: dict[str, str] = {}
    for run in runs:
        versions.update(run.get("versions") or {})
    versions["nats-server"] = nats_server
    return versions


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def median_row(key: tuple[str, int, int], runs: list[Row]) -> Row:
    """The median of each numeric field over the ok reps; ok only if every rep was."""
    good = [run for run in runs if run.get("ok")]
    row: Row = {"impl": key[0], "N": key[1], "L": key[2], "reps": len(runs),
                "ok": len(good) == len(runs)}
    for metric in METRICS:
        row[metric] = _median([run[metric] for run in good if run.get(metric) is not None])
    by_process: dict[str, list[float]] = {}
    for run in good:
        for name, value in (run.get("cpu_us_per_task_by_process") or {}).items():
            by_process.setdefault(name, []).append(value)
    row["cpu_us_per_task_by_process"] = {name: _median(v) for name, v in by_process.items()}
    return row


def medians(runs: Sequence[Row]) -> list[Row]:
    groups: dict[tuple[str, int, int], list[Row]] = {}
    for run in runs:
        groups.setdefault((run["impl"], run["N"], run["L"]), []).append(run)
    return [median_row(key, group) for key, group in groups.items()]


def write_json(path: Path, results: Row) -> None:
    """Write atomically: a crash mid-write leaves the previous file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


# --- progress -------------------------------------------------------------------------


def fmt_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _num(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.1f}"


def progress_line(index: int, total: int, config: Config, row: Row) -> str:
    head = f"[{index}/{total}] {config.impl} N={config.n} L={config.latency} rep {config.rep}:"
    took = f"({row['elapsed_s']:.1f} s)"
    if not row.get("ok") and row.get("tasks_per_s") is None:
        return f"{head} FAILED {took}: {row.get('error')}"
    figures = (f"{_num(row.get('tasks_per_s'))} tasks/s, "
               f"{_num(row.get('cpu_us_per_task'))} µs/task, p99 {_num(row.get('p99_ms'))} ms")
    status = "ok" if row.get("ok") else f"NOT OK: {row.get('error')}"
    return f"{head} {figures} {took} {status}"


def eta(remaining: Sequence[Config], done: Sequence[Row]) -> float:
    """Seconds left: each remaining run costs what the same config took in an earlier rep,
    else the mean at its N, else the mean of all runs so far."""
    if not done:
        return 0.0
    by_key = {(r["impl"], r["N"], r["L"]): r["elapsed_s"] for r in done}
    by_n: dict[int, list[float]] = {}
    for r in done:
        by_n.setdefault(r["N"], []).append(r["elapsed_s"])
    overall = statistics.mean(r["elapsed_s"] for r in done)
    return sum(by_key.get(c.key) or statistics.mean(by_n.get(c.n) or [overall])
               for c in remaining)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the matrix -----------------------------------------------------------------------


def skipped_row(config: Config, smaller: int) -> Row:
    return {"impl": config.impl, "N": config.n, "L": config.latency, "rep": config.rep,
            "ok": False, "elapsed_s": 0.0,
            "error": f"not run: timed out at N={smaller} (same L, rep {config.rep})"}


def run_matrix(args: argparse.Namespace, results: Row, json_path: Path) -> None:
    """Run every config, adding each run to ``results`` and rewriting ``json_path``."""
    configs = plan(args.impls, args.sizes, args.latencies, args.reps, args.large_reps)
    runs: list[Row] = results["runs"]
    timed_out: dict[tuple[int, str, int], int] = {}  # (rep, impl, L) -> smallest N
    for index, config in enumerate(configs, start=1):
        smaller = timed_out.get((config.rep, config.impl, config.latency))
        if smaller is not None and config.n > smaller:
            row = skipped_row(config, smaller)
        else:
            row = measure_one(config, args.max_seconds_per_config)
            if str(row.get("error", "")).startswith("timed out"):
                timed_out.setdefault((config.rep, config.impl, config.latency), config.n)
        runs.append(row)
        results["medians"] = medians(runs)
        results["versions"] = merged_versions(runs, results["versions"]["nats-server"])
        write_json(json_path, results)
        left = eta(configs[index:], [r for r in runs if r["elapsed_s"] > 0])
        say(progress_line(index, len(configs), config, row)
            + (f" — ETA {fmt_duration(left)}" if index < len(configs) else ""))


def run_extra(name: str, args: list[str], timeout_s: float) -> Row:
    """``bench.recovery`` or ``bench.memory`` in a process of its own."""
    say(f"{name}: python -m {' '.join(args)}")
    started = time.perf_counter()
    record, error = run_module(args, timeout_s)
    row: Row = record if record is not None else {"ok": False, "error": error}
    say(f"{name}: {json.dumps(row)} ({time.perf_counter() - started:.1f} s)")
    return row


def run_extras(args: argparse.Namespace, results: Row, json_path: Path) -> None:
    if not args.skip_recovery:
        results["recovery"] = run_extra("recovery", [
            "bench.recovery", "--runs", str(args.recovery_runs),
            "--latency-ms", str(args.recovery_latency_ms)], args.max_seconds_per_config)
        write_json(json_path, results)
    if not args.skip_memory:
        results["memory"] = [run_extra("memory", [
            "bench.memory", "--impl", impl, "--runs", str(args.memory_runs),
            "--latency-ms", str(args.memory_latency_ms)], args.max_seconds_per_config)
            for impl in args.memory_impls]
        write_json(json_path, results)


def report(args: argparse.Namespace, results: Row, json_path: Path) -> None:
    md_path, png_path = write_report(results, json_path)
    say(f"wrote {json_path}\nwrote {md_path}\nwrote {png_path}")
    if args.no_readme:
        return
    try:
        update_readme(args.readme, results, md_path, png_path)
        say(f"updated {args.readme}")
    except (ReportError, OSError) as exc:
        say(f"README not updated: {exc}\n(add a line {'<!-- bench:start -->'} and a line "
            f"{'<!-- bench:end -->'} where the results belong, then run "
            f"`python -m bench.report {json_path} --readme {args.readme}`)")


def all_ok(results: Row) -> bool:
    extras = [results.get("recovery"), *(results.get("memory") or [])]
    return (all(run.get("ok") for run in results["runs"])
            and all(extra.get("ok") for extra in extras if extra is not None))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.matrix", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Each run is `python -m bench.measure --impl I --n N --latency-ms L`; the "
               "full matrix takes hours on 2 cores (N=10000 runs dominate).")
    parser.add_argument("--impls", nargs="+", choices=list(IMPLS), default=list(IMPLS),
                        metavar="IMPL", help=f"implementations (default all: {', '.join(IMPLS)})")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 100, 1000, 10000],
                        metavar="N", help="tasks submitted at once (default 1 100 1000 10000)")
    parser.add_argument("--latencies", nargs="+", type=int, default=[0, 50], metavar="L",
                        help="model latency per call, ms (default 0 50)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--large-reps", type=int, metavar="R",
                        help=f"repetitions of N >= {LARGE_N:,} (default: --reps); each such "
                        "run takes minutes (LangGraph with SQLite: about 5)")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "bench" / "results",
                        help="where <date>.json/.md/.png go (default bench/results)")
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md",
                        help="README whose bench section to refresh (default README.md)")
    parser.add_argument("--no-readme", action="store_true", help="leave the README alone")
    parser.add_argument("--max-seconds-per-config", type=float, default=DEFAULT_TIMEOUT_S,
                        metavar="S", help="time limit of one run (and of the recovery and "
                        f"memory measures); past it the run is killed, not ok "
                        f"(default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--skip-recovery", action="store_true", help="no recovery measure")
    parser.add_argument("--recovery-runs", type=int, default=1000, metavar="N",
                        help="runs in flight when the daemon is killed (default 1000)")
    parser.add_argument("--recovery-latency-ms", type=float, default=2000.0, metavar="L",
                        help="model latency of the recovery measure (default 2000)")
    parser.add_argument("--skip-memory", action="store_true", help="no memory measure")
    parser.add_argument("--memory-runs", type=int, default=10000, metavar="N",
                        help="runs held in flight for the memory measure (default 10000)")
    parser.add_argument("--memory-latency-ms", type=float, default=20000.0, metavar="L",
                        help="model latency of the memory measure (default 20000: see "
                        "bench/memory.py)")
    parser.add_argument("--memory-impls", nargs="+", choices=list(IMPLS), default=["warden"],
                        metavar="IMPL", help="implementations whose memory to measure "
                        "(default warden)")
    args = parser.parse_args(argv)
    if args.reps < 1 or min(args.sizes) < 1 or min(args.latencies) < 0:
        parser.error("--reps and --sizes must be at least 1, --latencies at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    date = datetime.date.today().isoformat()
    json_path = args.out_dir / f"{date}.json"
    results: Row = {
        "date": date, "machine": machine(),
        "versions": {"nats-server": nats_server_version()},
        "matrix": {"impls": args.impls, "L": args.latencies, "N": args.sizes,
                   "reps": args.reps, "large_reps": args.large_reps or args.reps},
        "runs": [], "medians": [],
    }
    say(f"bench.matrix: {len(args.impls)} impls x {len(args.sizes)} N x "
        f"{len(args.latencies)} L x {args.reps} reps -> {json_path}")
    try:
        run_matrix(args, results, json_path)
        run_extras(args, results, json_path)
    finally:
        write_json(json_path, results)
    report(args, results, json_path)
    return 0 if all_ok(results) else 1


if __name__ == "__main__":
    sys.exit(main())
