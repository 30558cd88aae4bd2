"""The journal's anomaly tables (schema version 5): run profiles, flags, and what they are
computed from. The rules are ``anomaly.py``'s; this module only reads and writes.

Tables (``journal_schema.ANOMALY_SCHEMA``)::

    run_profiles  run_id (primary), kind, status, cost_usd, duration_s, retries,
                  tokens_per_step, ended_at
    anomalies     run_id, kind (primary together), value, threshold, detail, created_at

Every function takes an open ``Journal``; reads see committed writes only (a run's ending
is committed before its terminal event is emitted, and every write of the run before it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
from warden.bus.wire import AnomalyFlag
from warden.supervisor.anomaly import Flag, RunProfile, ToolUse, run_kind

if TYPE_CHECKING:  # journal.py reads the flags through this module
    from warden.supervisor.journal import Journal

__all__ = ("EndedRun", "anomalies_of", "baseline", "ended_run", "record_assessment")

_canonical = msgspec.json.Encoder(order="sorted")
_MAX_TOOL_USES = 5000
"""Tool calls of a run read for the patterns (a runaway run is flagged well before)."""


@dataclass(frozen=True, slots=True)
class EndedRun:
    """What the anomaly rules need of one ended run."""

    run_id: str
    status: str
    dry_run: bool
    profile: RunProfile
    """``kind`` is ``""`` for a run without steps (it ended before its plan)."""
    uses: list[ToolUse]


async def ended_run(journal: Journal, run_id: str) -> EndedRun | None:
    """The run's measures and tool calls as the journal holds them; ``None`` when there is
    no such run. A cancellation point (four reads)."""
    row = await journal._one(
        "SELECT status, created_at, updated_at, tokens, cost_usd, dry_run FROM runs "
        "WHERE id = ?", (run_id,))
    if row is None:
        return None
    status, created_at, updated_at, tokens, cost_usd, dry_run = row
    roles = [str(r[0]) for r in await journal._rows(
        "SELECT role FROM steps WHERE run_id = ? ORDER BY idx", (run_id,))]
    retries = await journal._one(
        "SELECT COUNT(*) FROM events WHERE run_id = ? AND kind = 'step_retry'", (run_id,))
    calls = await journal._rows(
        "SELECT step, name, arguments FROM tool_calls WHERE run_id = ? ORDER BY id LIMIT ?",
        (run_id, _MAX_TOOL_USES))
    uses = [ToolUse(step=int(step), name=str(name), arguments=_canonical_json(str(arguments)))
            for step, name, arguments in calls]
    profile = RunProfile(
        kind=run_kind(roles), cost_usd=float(cost_usd),
        duration_s=max(0.0, float(updated_at) - float(created_at)),
        retries=int((retries or (0,))[0]),
        tokens_per_step=float(tokens) / len(roles) if roles else 0.0,
    )
    return EndedRun(run_id=run_id, status=str(status), dry_run=bool(dry_run), profile=profile,
                    uses=uses)


def _canonical_json(text: str) -> str:
    try:
        return _canonical.encode(msgspec.json.decode(text)).decode()
    except msgspec.DecodeError:
        return text


async def baseline(journal: Journal, kind: str, *, limit: int, excluding: str
                   ) -> list[RunProfile]:
    """The newest ``limit`` profiles of runs of ``kind``, other than run ``excluding``."""
    rows = await journal._rows(
        "SELECT cost_usd, duration_s, retries, tokens_per_step FROM run_profiles "
        "WHERE kind = ? AND run_id != ? ORDER BY ended_at DESC LIMIT ?",
        (kind, excluding, limit))
    return [RunProfile(kind=kind, cost_usd=float(r[0]), duration_s=float(r[1]),
                       retries=int(r[2]), tokens_per_step=float(r[3])) for r in rows]


async def record_assessment(journal: Journal, run: EndedRun, flags: list[Flag]) -> None:
    """Record the run's profile (when it has a kind) and replace its flags, in one
    transaction, waited for. A cancellation point; raises ``JournalError``."""
    now = time.time()
    profile = run.profile
    statements: list[tuple[str, tuple[object, ...]]] = [
        ("DELETE FROM anomalies WHERE run_id = ?", (run.run_id,)),
    ]
    if profile.kind:
        statements.append((
            "INSERT OR REPLACE INTO run_profiles (run_id, kind, status, cost_usd, duration_s, "
            "retries, tokens_per_step, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (run.run_id, profile.kind, run.status, profile.cost_usd, profile.duration_s,
             profile.retries, profile.tokens_per_step, now)))
    statements.extend((
        "INSERT INTO anomalies (run_id, kind, value, threshold, detail, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (run.run_id, flag.kind, flag.value, flag.threshold, flag.detail, now),
    ) for flag in flags)
    await journal._writer.write(statements)


async def anomalies_of(journal: Journal, run_id: str) -> list[AnomalyFlag]:
    """The run's flags, as the wire carries them (none from a journal older than 5)."""
    if journal.version < 5:
        return []
    rows = await journal._rows(
        "SELECT kind, value, threshold, detail FROM anomalies WHERE run_id = ? "
        "ORDER BY rowid", (run_id,))
    return [AnomalyFlag(kind=str(r[0]), value=float(r[1]), threshold=float(r[2]),
                        detail=str(r[3])) for r in rows]
