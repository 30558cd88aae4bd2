"""Concurrent runs through the whole daemon: submit over NATS → intake → journal → run
supervisor → workers over NATS → result.

Measures, for N runs of the scripted ``triad`` scenario (8 model calls and 3 tool calls
per run) submitted at once: wall time, runs per second, CPU per run (this process, which
hosts the daemon and the driver, plus the embedded nats-server), peak RSS, and the
journal's group commit (writes, commits, writes per commit). Prints one JSON object per
configuration. It reports figures; it passes or fails on nothing but
every run succeeding with exactly 8 model calls.

    .venv/bin/python bench/concurrent_runs.py --runs 100 --latency-ms 0
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import anyio

from bus import subjects
from bus.connection import open_bus
from bus.wire import RunList, RunsQuery, TaskSubmission, encoder, reply_decoder
from config import load_settings
from supervisor.daemon import open_daemon
from supervisor.logs import configure_logging
from supervisor.run import TERMINAL


def _cpu_seconds_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / 100.0


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(runs: int, latency_ms: float, data_dir: Path) -> dict[str, object]:
    settings = load_settings(env={}, overrides={
        ("data_dir",): str(data_dir), ("models", "provider"): "scripted",
        ("models", "scripted_latency_ms"): latency_ms,
    })
    async with open_daemon(settings) as daemon, open_bus(daemon.bus.url, name="bench") as bus:
        server_pid = int((daemon.data_dir / "nats-server.pid").read_text())
        cpu0, server0 = _self_cpu(), _cpu_seconds_of(server_pid)
        writes0, commits0 = daemon.journal.writes, daemon.journal.commits
        started = time.perf_counter()
        for i in range(runs):
            task = TaskSubmission(id=f"b-{i}", text="x" * 100, scenario="triad")
            await bus.publish_task(encoder.encode(task), msg_id=task.id)
        while True:
            raw = await bus.request(subjects.API_RUNS,
                                    encoder.encode(RunsQuery(limit=runs + 10)), timeout=30)
            listing = reply_decoder.decode(raw)
            assert isinstance(listing, RunList)
            done = [r for r in listing.runs if r.status in TERMINAL]
            if len(done) == runs:
                break
            await anyio.sleep(0.05)
        wall = time.perf_counter() - started
        cpu = (_self_cpu() - cpu0) + (_cpu_seconds_of(server_pid) - server0)
        writes = daemon.journal.writes - writes0
        commits = daemon.journal.commits - commits0
        calls = [await daemon.journal.count_model_calls(r.id) for r in done]
    ok = all(r.status == "succeeded" for r in done) and all(c == 8 for c in calls)
    return {
        "impl": "warden", "N": runs, "L": latency_ms, "wall_s": round(wall, 3),
        "tasks_per_s": round(runs / wall, 1), "cpu_us_per_task": round(cpu / runs * 1e6),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "journal_writes": writes, "journal_commits": commits,
        "commits_per_s": round(commits / wall, 1), "writes_per_commit": round(writes / commits, 1),
        "ok": ok,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    configure_logging("error")
    ok = True
    for n in args.runs:
        with tempfile.TemporaryDirectory(prefix="warden-bench-") as tmp:
            result = anyio.run(measure, n, args.latency_ms, Path(tmp))
        print(json.dumps(result), flush=True)
        ok = ok and bool(result["ok"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
