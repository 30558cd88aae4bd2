"""``warden eval DIR``: recorded scenarios as regression tests for prompts, plans and
policies (issue 11, point 4).

A **scenario file** is one JSON object per file, ``<name>.json``::

    {"format": "warden-scenario", "version": 1,
     "name": "ledger", "description": "what it checks",
     "recording": {"run": {...}, "steps": [...], "model_calls": [...], "tool_calls": [...],
                   "approvals": [...], "intercepted": [...], "format": 1}}

``recording`` is a ``recording.Recording``: the task (``run.text``, ``run.scenario``,
``run.budget_usd``, ``run.dry_run``), every model call under its key with its request
and the recorded reply, every tool call with its arguments and outcome, the approval
decisions, and what is expected: each tool call's decision (its outcome: allowed, or
refused by a guard), each step's status and output, the run's plan, status, result and
error. ``warden replay RUN --save FILE`` writes one from a run in the journal.

Evaluating a scenario replays its recording under the *current* config (``replay.py``):
it passes when the replay makes the same requests, decisions and result. A changed role
prompt or tool list, model, or policy setting that changes what the run would do makes it
fail, with the first divergence as its reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import anyio
import msgspec
from warden.config import Settings
from warden.supervisor.errors import ReplayError
from warden.supervisor.recording import Recording
from warden.supervisor.replay import replay_under

__all__ = ("EvalResult", "Scenario", "evaluate", "load_scenario", "save_scenario",
           "scenario_files")


class Scenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One scenario file (module docstring)."""

    name: str
    recording: Recording
    description: str = ""
    format: Literal["warden-scenario"] = "warden-scenario"
    version: int = 1


class EvalResult(msgspec.Struct, frozen=True, kw_only=True):
    """One scenario's verdict: ``passed``, or why not (the first divergence, or why it
    could not be replayed); ``divergences`` counts them."""

    scenario: str
    file: str
    passed: bool
    reason: str = ""
    divergences: int = 0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Scenario)


def save_scenario(path: Path, scenario: Scenario) -> None:
    """Write ``scenario`` to ``path`` as indented JSON (reviewable in a diff). Blocks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(_encoder.encode(scenario), indent=1) + b"\n")


def load_scenario(path: Path) -> Scenario:
    """The scenario in ``path``. Blocks. Raises ``ReplayError`` naming the file and what
    is wrong with it."""
    try:
        return _decoder.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError) as exc:
        raise ReplayError(path.stem, f"{path} is not a scenario file: {exc}") from exc


def scenario_files(directory: Path) -> list[Path]:
    """The scenario files of ``directory`` (``*.json``), sorted. Blocks."""
    return sorted(p for p in directory.glob("*.json") if p.is_file())


async def evaluate(settings: Settings, path: Path, *, timeout_s: float) -> EvalResult:
    """Replay the scenario in ``path`` under ``settings``; its verdict. A scenario that
    cannot be read or replayed fails with why (it does not raise). Raises
    ``ConfigError`` (the config itself is wrong)."""
    try:
        scenario = await anyio.to_thread.run_sync(load_scenario, path)
        report = await replay_under(settings, scenario.recording, timeout_s=timeout_s)
    except ReplayError as exc:
        return EvalResult(scenario=path.stem, file=str(path), passed=False, reason=str(exc))
    except TimeoutError:
        return EvalResult(scenario=path.stem, file=str(path), passed=False,
                          reason=f"the replay did not end within {timeout_s:g} s")
    reason = "" if report.same else report.divergences[0].describe()
    return EvalResult(scenario=scenario.name, file=str(path), passed=report.same,
                      reason=reason, divergences=len(report.divergences))
