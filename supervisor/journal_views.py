"""Read-only views of the journal for the dashboard (``dashboard.py``): spend per day and
model. (A run's plan, its approval requests and a runs search are the journal's own
reads: ``run_state``, ``approvals(run_id=...)``, ``page_runs(text=...)``.)

Each is one statement through the journal's reader (``Journal._rows``: one hop, run to
the end, so a snapshot is never pinned). Nothing here writes; the schema is the journal's.
Days are UTC calendar days (SQLite's ``date(created_at, 'unixepoch')``).
"""

from __future__ import annotations

import time

import msgspec
from warden.supervisor.journal import Journal

__all__ = ("CostRow", "cost_per_day_and_model")

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
