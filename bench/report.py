"""Turn a benchmark results file into a Markdown report, a plot and a README section.

    .venv/bin/python -m bench.report bench/results/2026-11-22.json [--readme README.md]

Reads the JSON written by ``bench.matrix`` and writes, beside it, ``<stem>.md`` (one table
per latency L, rows grouped by N then implementation; the recovery and memory figures when
present; the goals, each marked met or missed with the measured figures) and ``<stem>.png``
(a 2x2 grid, rows L, columns tasks/s and CPU µs per task against N, log-log, one line per
implementation). With ``--readme`` it also replaces the lines between
``<!-- bench:start -->`` and ``<!-- bench:end -->`` in that file with the tables, a line
naming the date, machine and versions, and a link to the plot.

The goals are reported, never asserted: the exit status says only whether the report was
written. ``bench.matrix`` calls ``write_report`` and ``update_readme`` directly.

Input shape: ``date``, ``machine``, ``versions``, ``matrix`` (``impls``, ``L``, ``N``,
``reps``), ``runs`` (one per rep; ``ok`` false carries ``error``; numbers may be null),
``medians`` (one per impl, N, L; computed here from ``runs`` when absent), and optionally
``recovery`` (a dict) and ``memory`` (a dict, or a list of dicts each with ``impl``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

Row = dict[str, Any]
Key = tuple[str, int, int]  # (impl, N, L)

START_MARKER = "<!-- bench:start -->"
END_MARKER = "<!-- bench:end -->"
METRICS = ("wall_s", "tasks_per_s", "cpu_us_per_task", "peak_rss_mb", "rss_growth_mb",
           "p50_ms", "p99_ms")
COLUMNS = (  # (header, median field)
    ("tasks/s", "tasks_per_s"),
    ("CPU µs/task", "cpu_us_per_task"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("peak RSS MB", "peak_rss_mb"),
    ("RSS growth MB", "rss_growth_mb"),
)
GOAL_N, GOAL_L = 1000, 0
GOAL_CPU_US = 1000.0
GOAL_RATIOS = (("autogen_core", 2.0), ("langgraph_sqlite", 20.0))
GOAL_BIG_N = 10000
GOAL_KB_PER_RUN = 10.0


class ReportError(Exception):
    """A results file or README this module cannot work with."""


# --- reading ------------------------------------------------------------------------


def load_results(path: Path) -> dict[str, Any]:
    """The results object in ``path``; ``ReportError`` if unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object at the top level")
    return data


def key_of(row: Row) -> Key:
    return (str(row["impl"]), int(row["N"]), int(row["L"]))


def medians(results: dict[str, Any]) -> dict[Key, Row]:
    """The median rows by (impl, N, L): ``results["medians"]``, else computed from runs."""
    given = results.get("medians")
    if given:
        return {key_of(row): row for row in given}
    groups: dict[Key, list[Row]] = {}
    for run in results.get("runs") or []:
        groups.setdefault(key_of(run), []).append(run)
    return {key: median_of(key, runs) for key, runs in groups.items()}


def median_of(key: Key, runs: list[Row]) -> Row:
    row: Row = {"impl": key[0], "N": key[1], "L": key[2], "reps": len(runs),
                "ok": all(run.get("ok") for run in runs)}
    for metric in METRICS:
        values = [run[metric] for run in runs if run.get(metric) is not None]
        row[metric] = statistics.median(values) if values else None
    return row


def failed_runs(results: dict[str, Any]) -> dict[Key, list[Row]]:
    """The runs that were not ok, by (impl, N, L)."""
    failed: dict[Key, list[Row]] = {}
    for run in results.get("runs") or []:
        if not run.get("ok"):
            failed.setdefault(key_of(run), []).append(run)
    return failed


def impl_order(results: dict[str, Any], rows: Iterable[Row]) -> list[str]:
    """Implementations in the matrix's order, then any others in order of appearance."""
    order = list((results.get("matrix") or {}).get("impls") or [])
    for row in rows:
        if row["impl"] not in order:
            order.append(row["impl"])
    return order


def memory_entries(results: dict[str, Any]) -> list[Row]:
    """``results["memory"]`` as a list of dicts (a lone dict becomes a list of one)."""
    memory = results.get("memory")
    if memory is None:
        return []
    return [memory] if isinstance(memory, dict) else list(memory)


# --- formatting ---------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    """A number for people: thousands separators, no more decimals than are telling."""
    if value is None:
        return "—"
    size = abs(value)
    if size >= 100 or float(value).is_integer():
        text = f"{value:,.0f}"
    elif size >= 10:
        text = f"{value:,.1f}".removesuffix(".0")
    elif size >= 0.1:
        text = f"{value:.2f}".rstrip("0").rstrip(".")
    else:
        text = f"{value:.2g}"
    return text + unit


def ok_cell(row: Row, failed: Sequence[Row]) -> str:
    if row.get("ok"):
        return "yes"
    reps = row.get("reps")
    return f"**no** ({len(failed)}/{reps} failed)" if failed and reps else "**no**"


def machine_line(results: dict[str, Any]) -> str:
    """One line: date, machine, versions."""
    machine = results.get("machine") or {}
    parts = [f"{machine['cores']} cores" if "cores" in machine else "",
             f"{fmt(machine['memory_gib'])} GiB" if "memory_gib" in machine else "",
             str(machine.get("cpu") or ""), str(machine.get("platform") or "")]
    versions = " · ".join(f"{name} {v}" for name, v in (results.get("versions") or {}).items())
    text = f"Measured {results.get('date', '?')} on {', '.join(p for p in parts if p) or '?'}"
    return f"{text}. Versions: {versions or '?'}."


def short_machine(results: dict[str, Any]) -> str:
    machine = results.get("machine") or {}
    cores = machine.get("cores", "?")
    memory = fmt(machine.get("memory_gib"))
    return f"{cores} cores, {memory} GiB"


# --- Markdown -----------------------------------------------------------------------


def table_lines(results: dict[str, Any], latency: int) -> list[str]:
    """The Markdown table of the medians at latency ``latency``, by N then impl."""
    rows = [row for key, row in medians(results).items() if key[2] == latency]
    failed = failed_runs(results)
    order = impl_order(results, rows)
    rows.sort(key=lambda row: (row["N"], order.index(row["impl"])))
    headers = ["impl", "N", *(header for header, _ in COLUMNS), "ok"]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(headers) - 2) + [":---:"]) + "|"]
    for row in rows:
        cells = [f"`{row['impl']}`", fmt(row["N"])]
        cells += [fmt(row.get(field)) for _, field in COLUMNS]
        cells.append(ok_cell(row, failed.get(key_of(row), [])))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def latencies(results: dict[str, Any]) -> list[int]:
    present = {key[2] for key in medians(results)}
    return sorted(present)


def tables_section(results: dict[str, Any], caption: str) -> list[str]:
    """A table per L, each after ``caption`` formatted with the latency."""
    lines: list[str] = []
    for latency in latencies(results):
        lines += [caption.format(L=latency), "", *table_lines(results, latency), ""]
    return lines


def failures_section(results: dict[str, Any]) -> list[str]:
    failed = failed_runs(results)
    if not failed:
        return []
    lines = ["### Failed runs", ""]
    for (impl, n, latency), runs in sorted(failed.items()):
        for run in runs:
            error = " ".join(str(run.get("error") or "no error given").split())
            error = error if len(error) <= 200 else error[:197] + "..."
            lines.append(f"- `{impl}` N={fmt(n)} L={latency} rep {run.get('rep', '?')}: {error}")
    return [*lines, ""]


RECOVERY_LABELS = {
    "runs": ("runs submitted", ""),
    "L_ms": ("model latency", " ms"),
    "in_flight": ("runs in flight at the kill", ""),
    "kill_to_ready_s": ("restart → daemon answering (every run resumed)", " s"),
    "restart_to_all_stepped_s": ("restart → every run stepped again", " s"),
    "restart_to_all_completed_s": ("restart → every run completed", " s"),
    "all_completed": ("every run completed, 8 model and 3 tool calls each", ""),
    "processes_left": ("processes left behind", ""),
    "ok": ("ok", ""),
}


def value_text(value: Any, unit: str = "") -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, int | float):
        return fmt(value, unit)
    return str(value)


def recovery_section(results: dict[str, Any]) -> list[str]:
    recovery = results.get("recovery")
    if not recovery:
        return []
    lines = ["## Recovery (daemon killed with runs in flight)", "",
             "| measure | value |", "|---|---:|"]
    for name, value in recovery.items():
        label, unit = RECOVERY_LABELS.get(name, (name, ""))
        lines.append(f"| {label} | {value_text(value, unit)} |")
    return [*lines, ""]


def memory_section(results: dict[str, Any]) -> list[str]:
    entries = memory_entries(results)
    if not entries:
        return []
    lines = ["## Memory (runs held in flight)", "",
             "| impl | runs in flight | L ms | RSS MB | KB per run | ok |",
             "|---|---:|---:|---:|---:|:---:|"]
    for entry in entries:
        cells = [f"`{entry.get('impl', 'warden')}`", fmt(entry.get("in_flight")),
                 fmt(entry.get("L_ms")), fmt(entry.get("rss_mb")),
                 fmt(entry.get("kb_per_run")), value_text(bool(entry.get("ok")))]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


# --- goals --------------------------------------------------------------------------

Goal = tuple[str, str, bool | None]  # (goal, measured, met; None when not measured)


def goal_cpu(rows: dict[Key, Row]) -> tuple[Goal, float | None]:
    cpu = (rows.get(("warden", GOAL_N, GOAL_L)) or {}).get("cpu_us_per_task")
    goal = f"warden CPU per task at N={fmt(GOAL_N)}, L={GOAL_L} ≤ {fmt(GOAL_CPU_US)} µs"
    if cpu is None:
        return (goal, "not measured", None), None
    return (goal, fmt(cpu, " µs"), cpu <= GOAL_CPU_US), cpu


def goal_ratio(rows: dict[Key, Row], warden_cpu: float | None, peer: str, target: float) -> Goal:
    goal = f"warden CPU per task ≥ {fmt(target)}x below `{peer}`'s (N={fmt(GOAL_N)}, L={GOAL_L})"
    peer_cpu = (rows.get((peer, GOAL_N, GOAL_L)) or {}).get("cpu_us_per_task")
    if warden_cpu is None or peer_cpu is None or warden_cpu <= 0:
        return goal, "not measured", None
    ratio = peer_cpu / warden_cpu
    measured = f"{fmt(ratio)}x ({fmt(peer_cpu)} µs vs {fmt(warden_cpu)} µs)"
    return goal, measured, ratio >= target


def goal_big_n(results: dict[str, Any], rows: dict[Key, Row]) -> Goal:
    goal = f"warden completes N={fmt(GOAL_BIG_N)} with every run ok"
    runs = [run for run in results.get("runs") or []
            if run.get("impl") == "warden" and run.get("N") == GOAL_BIG_N]
    if not runs:  # no per-rep runs: fall back on the medians' ok
        runs = [row for key, row in rows.items() if key[:2] == ("warden", GOAL_BIG_N)]
    if not runs:
        return goal, "not measured", None
    ok = sum(1 for run in runs if run.get("ok"))
    return goal, f"{ok}/{len(runs)} ok", ok == len(runs)


def goals_memory(results: dict[str, Any]) -> list[Goal]:
    entries = [e for e in memory_entries(results) if str(e.get("impl", "warden")).startswith(
        "warden")]
    goals: list[Goal] = []
    for entry in entries or [{}]:
        impl = entry.get("impl", "warden")
        goal = f"`{impl}` memory ≤ {fmt(GOAL_KB_PER_RUN)} KB per in-flight run"
        kb = entry.get("kb_per_run")
        if kb is None:
            goals.append((goal, "not measured", None))
            continue
        measured = f"{fmt(kb)} KB/run ({fmt(entry.get('in_flight'))} in flight)"
        goals.append((goal, measured, kb <= GOAL_KB_PER_RUN))
    return goals


def goals(results: dict[str, Any]) -> list[Goal]:
    """Every goal with its measured figures and whether it was met."""
    rows = medians(results)
    cpu_goal, warden_cpu = goal_cpu(rows)
    ratio_goals = [goal_ratio(rows, warden_cpu, peer, target) for peer, target in GOAL_RATIOS]
    return [cpu_goal, *ratio_goals, goal_big_n(results, rows), *goals_memory(results)]


def goals_section(results: dict[str, Any]) -> list[str]:
    status = {True: "met", False: "**missed**", None: "not measured"}
    lines = ["## Goals", "", "| goal | measured | status |", "|---|---|---|"]
    lines += [f"| {goal} | {measured} | {status[met]} |" for goal, measured, met in goals(results)]
    return [*lines, ""]


def reps_line(results: dict[str, Any]) -> str:
    matrix = results.get("matrix") or {}
    reps, large = matrix.get("reps", "?"), matrix.get("large_reps")
    if large is None or large == reps:
        return f"Medians of {reps} reps."
    return f"Medians of {reps} reps (N = 10,000: {large})."


def markdown(results: dict[str, Any], png_name: str) -> str:
    """The whole Markdown report."""
    lines = [f"# Benchmark results, {results.get('date', '?')}", "", machine_line(results), "",
             reps_line(results), ""]
    lines += tables_section(results, "## L = {L} ms per model call")
    lines += failures_section(results)
    lines += [f"![tasks/s and CPU per task against N]({png_name})", ""]
    lines += recovery_section(results) + memory_section(results) + goals_section(results)
    return "\n".join(lines).rstrip("\n") + "\n"


# --- plot ---------------------------------------------------------------------------

PANELS = (("tasks_per_s", "tasks/s"), ("cpu_us_per_task", "CPU µs per task"))


def plot_panel(ax: Axes, series: dict[str, list[Row]], field: str, colours: dict[str, Any]
               ) -> None:
    """One line per impl of ``field`` against N; a black cross marks a point not ok."""
    for impl, rows in series.items():
        points = [(row["N"], row[field], row.get("ok")) for row in rows
                  if row.get(field) is not None and row[field] > 0]
        if not points:
            continue
        xs, ys, _ = zip(*points, strict=True)
        width = 2.5 if impl.startswith("warden") else 1.5
        ax.plot(xs, ys, marker="o", color=colours[impl], linewidth=width, label=impl)
        bad = [(x, y) for x, y, ok in points if not ok]
        if bad:
            bad_x, bad_y = zip(*bad, strict=True)
            ax.scatter(bad_x, bad_y, marker="x", s=90, color="black", zorder=5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ns = sorted({row["N"] for rows in series.values() for row in rows})
    if ns:
        ax.set_xticks(ns, [fmt(n) for n in ns])
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", alpha=0.12)


def plot(results: dict[str, Any], png_path: Path) -> None:
    """The 2x2 grid (rows L, columns tasks/s and CPU µs per task, against N) to ``png_path``."""
    rows = medians(results)
    order = impl_order(results, rows.values())
    colours = {impl: f"C{i % 10}" for i, impl in enumerate(order)}
    lats = latencies(results) or [0]
    fig = Figure(figsize=(12, 4.5 * len(lats)), dpi=100)
    axes = fig.subplots(len(lats), len(PANELS), squeeze=False)
    for r, latency in enumerate(lats):
        series = {impl: sorted((row for key, row in rows.items()
                                if key[0] == impl and key[2] == latency), key=lambda x: x["N"])
                  for impl in order}
        for c, (field, label) in enumerate(PANELS):
            ax = axes[r][c]
            plot_panel(ax, series, field, colours)
            ax.set_title(f"{label}, L = {latency} ms")
            ax.set_xlabel("N (tasks)")
            ax.set_ylabel(label)
    handles = [Line2D([], [], color=colours[i], marker="o", label=i) for i in order
               if any(key[0] == i for key in rows)]
    if not all(row.get("ok") for row in rows.values()):
        handles.append(Line2D([], [], color="black", marker="x", linestyle="", label="not ok"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(f"warden bench {results.get('date', '?')}: {short_machine(results)} "
                 "(medians; log-log)")
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    fig.savefig(png_path)


# --- outputs ------------------------------------------------------------------------


def write_report(results: dict[str, Any], json_path: Path) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.png`` beside ``json_path``; return their paths."""
    md_path, png_path = json_path.with_suffix(".md"), json_path.with_suffix(".png")
    plot(results, png_path)
    md_path.write_text(markdown(results, png_path.name), encoding="utf-8")
    return md_path, png_path


def relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def readme_block(readme: Path, results: dict[str, Any], md_path: Path, png_path: Path
                 ) -> list[str]:
    """The lines that go between the markers."""
    lines = ["", *tables_section(results, "**L = {L} ms per model call**")]
    lines += [f"{machine_line(results)} Full report: [{md_path.name}]"
              f"({relative(md_path, readme.parent)}).", "",
              f"![tasks/s and CPU per task against N]({relative(png_path, readme.parent)})", ""]
    return lines


def update_readme(readme: Path, results: dict[str, Any], md_path: Path, png_path: Path) -> None:
    """Replace the lines between the bench markers in ``readme``; ``ReportError`` if absent."""
    text = readme.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == START_MARKER]
    ends = [i for i, line in enumerate(lines) if line.strip() == END_MARKER]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ReportError(
            f"{readme}: need exactly one line {START_MARKER!r} followed later by exactly one "
            f"line {END_MARKER!r} (found {len(starts)} start, {len(ends)} end)")
    newline = "\r\n" if lines[starts[0]].endswith("\r\n") else "\n"
    block = [line + newline for line in readme_block(readme, results, md_path, png_path)]
    readme.write_text("".join(lines[:starts[0] + 1] + block + lines[ends[0]:]), encoding="utf-8")


# --- command line -------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Render a bench.matrix results file as Markdown tables and a PNG plot "
                    "(written beside it as <stem>.md and <stem>.png), and optionally refresh "
                    "the benchmark section of a README. Goals are reported, not asserted.")
    parser.add_argument("results", type=Path,
                        help="the results JSON, e.g. bench/results/2026-11-22.json")
    parser.add_argument("--readme", type=Path, metavar="PATH",
                        help=f"also replace the lines between {START_MARKER} and {END_MARKER} "
                             "in this file with the tables, the date/machine/versions line "
                             "and a link to the plot (an error if the markers are missing)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = load_results(args.results)
        md_path, png_path = write_report(results, args.results)
        print(f"wrote {md_path}\nwrote {png_path}")
        if args.readme is not None:
            update_readme(args.readme, results, md_path, png_path)
            print(f"updated {args.readme}")
    except (ReportError, OSError) as exc:
        print(f"bench.report: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
