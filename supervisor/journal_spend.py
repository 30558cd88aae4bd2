"""The journal's reads of spend over a time window (``spend.py``, ``warden spend``): the
model calls recorded in it, summed per tenant and per run, joined to ``runs.tenant``
(schema version 6; a run without one is the ``default`` tenant's).

Every function takes an open ``Journal``; reads see committed writes only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from warden.config import DEFAULT_TENANT

if TYPE_CHECKING:
    from warden.supervisor.journal import Journal

__all__ = ("RunSpend", "TenantSpend", "run_spend_since", "spend_since", "tenant_spend_since")

_TOKENS = ("m.input_tokens + m.output_tokens + m.cache_creation_tokens + "
           "m.cache_read_tokens")


def _tenant_column(journal: Journal) -> str:
    # A file read without a daemon may be older than version 6: no tenants yet.
    return ("COALESCE(r.tenant, ?)" if journal.version >= 6 else "?")


class TenantSpend(NamedTuple):
    tenant: str
    cost_usd: float
    tokens: int
    cache_read_tokens: int
    cache_write_tokens: int


class RunSpend(NamedTuple):
    run_id: str
    tenant: str
    status: str
    budget_usd: float | None
    cost_usd: float
    tokens: int
    cache_read_tokens: int
    cache_write_tokens: int


async def tenant_spend_since(journal: Journal, start: float, end: float) -> list[TenantSpend]:
    """Per tenant, the USD, tokens, cache-read and cache-write tokens of the model calls
    recorded in ``[start, end)``. A cancellation point (one read)."""
    rows = await journal._rows(
        f"SELECT {_tenant_column(journal)} AS t, COALESCE(SUM(m.cost_usd), 0), "
        f"COALESCE(SUM({_TOKENS}), 0), COALESCE(SUM(m.cache_read_tokens), 0), "
        "COALESCE(SUM(m.cache_creation_tokens), 0) "
        "FROM model_calls m LEFT JOIN runs r ON r.id = m.run_id "
        "WHERE m.created_at >= ? AND m.created_at < ? GROUP BY t ORDER BY t",
        (DEFAULT_TENANT, start, end),
    )
    return [TenantSpend(str(r[0]), float(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]


async def spend_since(journal: Journal, start: float, end: float
                      ) -> list[tuple[str, float, int]]:
    """Per tenant, ``(tenant, USD, tokens)`` of the model calls recorded in
    ``[start, end)``: what a daemon's day levels start from."""
    return [(s.tenant, s.cost_usd, s.tokens)
            for s in await tenant_spend_since(journal, start, end)]


async def run_spend_since(journal: Journal, start: float, end: float, *,
                          tenant: str | None = None, limit: int = 200) -> list[RunSpend]:
    """Per run with model calls recorded in ``[start, end)`` (of ``tenant`` only, if
    given), what those calls cost, newest call first, at most ``limit`` runs."""
    tenant_sql = _tenant_column(journal)
    where = "m.created_at >= ? AND m.created_at < ?"
    params: tuple[object, ...] = (DEFAULT_TENANT, start, end)
    if tenant is not None:
        where += f" AND {tenant_sql} = ?"
        params += (DEFAULT_TENANT, tenant)
    rows = await journal._rows(
        f"SELECT m.run_id, {tenant_sql}, COALESCE(r.status, '?'), r.budget_usd, "
        f"SUM(m.cost_usd), SUM({_TOKENS}), SUM(m.cache_read_tokens), "
        "SUM(m.cache_creation_tokens) "
        "FROM model_calls m LEFT JOIN runs r ON r.id = m.run_id "
        f"WHERE {where} GROUP BY m.run_id ORDER BY MAX(m.created_at) DESC LIMIT ?",
        (*params, limit),
    )
    return [RunSpend(str(r[0]), str(r[1]), str(r[2]), None if r[3] is None else float(r[3]),
                     float(r[4]), int(r[5]), int(r[6]), int(r[7])) for r in rows]
