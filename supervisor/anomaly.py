"""Anomaly flags: a run that ended far from the runs like it, or that repeated itself.

The rules (the spec; settings in ``[anomaly]``, ``config.settings.AnomalySettings``):

- **Comparable runs.** A run's *kind* is the sequence of roles of its plan
  (``research>code>review``). Its baseline is the last ``baseline_runs`` ended runs of the
  same kind (not itself; dry runs, rejected and cancelled runs are never profiled).
- **Measures.** ``cost`` (USD), ``duration`` (seconds from submission to the end),
  ``retries`` (step retries), ``tokens_per_step`` (the run's tokens over its steps).
- **Far above.** With at least ``min_baseline_runs`` baseline runs, a measure is flagged
  when it is above ``max(median + mad_k * MAD, median_ratio * median)`` of the baseline
  (MAD: the median absolute deviation). Both bounds: MAD alone is 0 for identical runs,
  and a ratio alone ignores how much the baseline spreads. Retries are flagged only from
  ``min_retries`` on, durations from ``min_duration_s``. Fewer baseline runs: nothing is
  flagged (too little to compare).
- **Repeated tool-call patterns.** ``repeated_tool_sequence``: in one step, a sequence of
  2 to ``max_pattern_length`` tool names (not all the same name) called back to back
  ``repeat_threshold`` times or more. ``repeated_tool_call``: the same tool with the same
  arguments called in ``cross_step_repeats`` steps or more (the loop guard sees one step
  attempt only). These need no baseline.

This module is pure (no I/O, no clock): ``assess`` takes what the journal holds of the
run and its baseline (``journal_anomaly.py`` reads and records them; ``anomaly_watch.py``
runs it when a run ends). Flags are recorded on the run, counted in
``warden_anomalies_total{kind}`` and shown by ``warden show``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Literal, get_args

from warden.config.settings import AnomalySettings

__all__ = (
    "ANOMALY_KINDS",
    "AnomalyKind",
    "Flag",
    "RunProfile",
    "ToolUse",
    "assess",
    "outliers",
    "repeated_calls",
    "repeated_sequence",
    "run_kind",
    "threshold",
    "tool_patterns",
)

AnomalyKind = Literal[
    "cost", "duration", "retries", "tokens_per_step",
    "repeated_tool_sequence", "repeated_tool_call",
]
ANOMALY_KINDS: tuple[AnomalyKind, ...] = get_args(AnomalyKind)

_MEASURES: tuple[tuple[AnomalyKind, str, str], ...] = (
    # kind, RunProfile field, how a value is printed
    ("cost", "cost_usd", "${:.6f}"),
    ("duration", "duration_s", "{:.1f} s"),
    ("retries", "retries", "{:g}"),
    ("tokens_per_step", "tokens_per_step", "{:.0f}"),
)


@dataclass(frozen=True, slots=True)
class RunProfile:
    """What a run's baseline compares: one ended run's measures."""

    kind: str
    cost_usd: float
    duration_s: float
    retries: int
    tokens_per_step: float


@dataclass(frozen=True, slots=True)
class ToolUse:
    """One tool call of a run, in the order it was made."""

    step: int
    name: str
    arguments: str
    """Canonical JSON (sorted keys): equal arguments compare equal."""


@dataclass(frozen=True, slots=True)
class Flag:
    """One anomaly of a run."""

    kind: AnomalyKind
    value: float
    threshold: float
    """The bound ``value`` went past (a count for the tool patterns)."""
    detail: str


def run_kind(roles: Sequence[str]) -> str:
    """The kind of a run whose plan has steps of ``roles``, in order: ``a>b>c``."""
    return ">".join(roles)


def threshold(values: Sequence[float], settings: AnomalySettings) -> float | None:
    """The bound above which a value is far above ``values``; ``None`` when there are
    fewer than ``min_baseline_runs`` of them."""
    if not values or len(values) < max(1, settings.min_baseline_runs):
        return None
    middle = median(values)
    mad = median(abs(v - middle) for v in values)
    return max(middle + settings.mad_k * mad, settings.median_ratio * middle)


def outliers(profile: RunProfile, baseline: Sequence[RunProfile],
             settings: AnomalySettings) -> list[Flag]:
    """The measures of ``profile`` far above ``baseline`` (runs of the same kind)."""
    flags: list[Flag] = []
    for kind, attribute, shown in _MEASURES:
        values = [float(getattr(p, attribute)) for p in baseline]
        bound = threshold(values, settings)
        value = float(getattr(profile, attribute))
        if bound is None or value <= bound:
            continue
        if kind == "retries" and value < settings.min_retries:
            continue
        if kind == "duration" and value < settings.min_duration_s:
            continue
        flags.append(Flag(kind=kind, value=value, threshold=bound, detail=(
            f"{kind} {shown.format(value)} is above {shown.format(bound)} (median "
            f"{shown.format(median(values))} of the last {len(values)} runs of kind "
            f"{profile.kind!r})")))
    return flags


def repeated_sequence(names: Sequence[str], *, times: int, max_length: int
                      ) -> tuple[tuple[str, ...], int] | None:
    """The first sequence of 2..``max_length`` names (not all one name) that ``names``
    repeats back to back at least ``times`` times, with how many; ``None`` if none.
    Shortest sequences first."""
    if times < 2:
        return None
    count = len(names)
    for length in range(2, max_length + 1):
        if length * times > count:
            break
        for start in range(count - length * times + 1):
            pattern = tuple(names[start:start + length])
            if len(set(pattern)) == 1:
                continue
            repeats = 1
            at = start + length
            while tuple(names[at:at + length]) == pattern:
                repeats += 1
                at += length
            if repeats >= times:
                return pattern, repeats
    return None


def repeated_calls(uses: Sequence[ToolUse], *, steps: int) -> tuple[ToolUse, int] | None:
    """The first call (tool and arguments) made in at least ``steps`` distinct steps, with
    in how many; ``None`` if none."""
    if steps < 2:
        return None
    seen: dict[tuple[str, str], set[int]] = {}
    for use in uses:
        where = seen.setdefault((use.name, use.arguments), set())
        where.add(use.step)
        if len(where) >= steps:
            return use, len(where)
    return None


def tool_patterns(uses: Sequence[ToolUse], settings: AnomalySettings) -> list[Flag]:
    """The repeated tool-call patterns of a run's calls (``uses``, in call order)."""
    flags: list[Flag] = []
    by_step: dict[int, list[str]] = {}
    for use in uses:
        by_step.setdefault(use.step, []).append(use.name)
    if settings.repeat_threshold >= 2:
        for step, names in sorted(by_step.items()):
            found = repeated_sequence(names, times=settings.repeat_threshold,
                                      max_length=settings.max_pattern_length)
            if found is not None:
                pattern, repeats = found
                flags.append(Flag(
                    kind="repeated_tool_sequence", value=repeats,
                    threshold=settings.repeat_threshold,
                    detail=f"step {step} called {' → '.join(pattern)} {repeats} times in a row"))
                break  # one flag per kind and run
    found_call = repeated_calls(uses, steps=settings.cross_step_repeats)
    if found_call is not None:
        use, steps = found_call
        flags.append(Flag(
            kind="repeated_tool_call", value=steps, threshold=settings.cross_step_repeats,
            detail=f"{use.name} with the same arguments was called in {steps} steps"))
    return flags


def assess(profile: RunProfile, baseline: Sequence[RunProfile], uses: Sequence[ToolUse],
           settings: AnomalySettings) -> list[Flag]:
    """Every anomaly of an ended run: its outlying measures, then its tool patterns."""
    return [*outliers(profile, baseline, settings), *tool_patterns(uses, settings)]
