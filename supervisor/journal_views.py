"""Read-only views of the journal for the dashboard (``dashboard.py``): spend per day and
model, a run's plan, a run's approval requests with their decisions, a runs search.

Each is one statement through the journal's reader (``Journal._rows``: one hop, run to
the end, so a snapshot is never pinned). Nothing here writes; the schema is the journal's.
Days are UTC calendar days (SQLite's ``date(created_at, 'unixepoch')``).
"""

from __future__ import annotations

import time

import msgspec
from warden.bus.wire import RunSummary
from warden.supervisor.journal import _APPROVAL_COLUMNS, ApprovalRecord, Journal, _approval

__all__ = ("CostRow", "approvals_of_run", "cost_per_day_and_model", "run_plan",
           "search_runs")

_DAY_S = 86_400.0


class CostRow(msgspec.Struct, frozen=True, kw_only=True):
    """What one model cost on one UTC day: its calls, tokens and dollars."""

    day: str
    """``YYYY-MM-DD`` (UTC)."""
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cache_tokens: int
    """Cache reads plus cache writes."""
    cost_usd: float


async def cost_per_day_and_model(journal: Journal, *, days: int = 14,
                                 now: float | None = None) -> list[CostRow]:
    """Spend per UTC day and model over the last ``days`` days (today included), newest
    day first, then by model. A cancellation point."""
    since = (time.time() if now is None else now) - days * _DAY_S
    rows = await journal._rows(
        "SELECT date(created_at, 'unixepoch') AS day, model, count(*), sum(input_tokens), "
        "sum(output_tokens), sum(cache_read_tokens + cache_creation_tokens), sum(cost_usd) "
        "FROM model_calls WHERE created_at >= ? GROUP BY day, model "
        "ORDER BY day DESC, model", (since,))
    return [CostRow(day=str(r[0]), model=str(r[1]), calls=int(r[2]),
                    input_tokens=int(r[3] or 0), output_tokens=int(r[4] or 0),
                    cache_tokens=int(r[5] or 0), cost_usd=round(float(r[6] or 0.0), 6))
            for r in rows]


async def run_plan(journal: Journal, run_id: str) -> str | None:
    """The plan the run was given (its JSON text), or ``None`` (none yet, or no run)."""
    rows = await journal._rows("SELECT plan FROM runs WHERE id = ?", (run_id,))
    return None if not rows or rows[0][0] is None else str(rows[0][0])


async def approvals_of_run(journal: Journal, run_id: str) -> list[ApprovalRecord]:
    """Every approval request of the run, oldest first, with its decision if any."""
    rows = await journal._rows(f"{_APPROVAL_COLUMNS} WHERE run_id = ? ORDER BY created_at",
                               (run_id,))
    return [_approval(row) for row in rows]


async def search_runs(journal: Journal, *, status: str | None, text: str, limit: int,
                      text_chars: int = 200) -> list[RunSummary]:
    """The newest ``limit`` runs (of ``status``, if given) whose id or text holds
    ``text`` (case-insensitive; every run when empty), newest first, without steps or
    result and with text and error cut to ``text_chars`` (``truncated`` then), as a
    listing is. A cancellation point."""
    needle = text.lower()
    where = ["(instr(lower(id), ?) > 0 OR instr(lower(text), ?) > 0)"]
    params: list[object] = [text_chars, text_chars, needle, needle]
    if status is not None:
        where.append("status = ?")
        params.append(status)
    rows = await journal._rows(
        "SELECT id, status, substr(text, 1, ?), scenario, created_at, updated_at, tokens, "
        "cost_usd, substr(error, 1, ?), length(text), length(error) FROM runs "
        f"WHERE {' AND '.join(where)} ORDER BY rowid DESC LIMIT ?", (*params, limit))
    return [RunSummary(id=str(r[0]), status=str(r[1]), text=str(r[2]),
                       scenario=None if r[3] is None else str(r[3]),
                       created_at=float(r[4]), updated_at=float(r[5]), tokens=int(r[6]),
                       cost_usd=float(r[7]), error=None if r[8] is None else str(r[8]),
                       truncated=int(r[9] or 0) > text_chars or int(r[10] or 0) > text_chars)
            for r in rows]
