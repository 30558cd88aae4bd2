"""``warden spend [--tenant T] [--json]``: today's spend against the budgets (README,
"Budgets").

Asks the daemon (the API's ``spend`` verb; the client and operator identities may) for
the day's level, each tenant's (or ``T``'s only) and each run with model calls recorded
today: what was spent (USD and tokens, cache read and cache write tokens among them),
what calls in flight hold, the limit and what is left. A run's figures are its spend
*today* (a run that began yesterday shows only today's part). Without a daemon there are
no levels to read: the command says so (exit 2). ``--json`` prints the ``SpendReport``.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from warden.bus.wire import SpendLevel, SpendQuery, SpendReport, encoder
from warden.supervisor.cli import (
    _open_client,
    _request,
    _settings,
    check_tenant,
    daemon_id_for,
)

__all__ = ("add_spend_commands", "cmd_spend", "print_spend")


async def cmd_spend(args: argparse.Namespace) -> int:
    settings = _settings(args)
    check_tenant(args.tenant)
    query = SpendQuery(tenant=args.tenant)
    async with _open_client(settings, "client", "warden-cli") as bus:
        daemon_id = await daemon_id_for(bus, settings, args.daemon)
        report = await _request(bus, daemon_id, "spend", query,
                                settings.nats.request_timeout_s)
    assert isinstance(report, SpendReport)
    if args.json:
        print(encoder.encode(report).decode())
    else:
        print_spend(report)
    return 0


def _usd(value: float | None, limit: float) -> str:
    if value is None or not limit:
        return "-"
    return f"${value:.4f}"


def _tokens(value: int | None, limit: int) -> str:
    if value is None or not limit:
        return "-"
    return str(value)


def _row(level: SpendLevel, name: str) -> tuple[str, ...]:
    return (
        name, f"${level.spent_usd:.4f}", _usd(level.limit_usd, level.limit_usd),
        _usd(level.left_usd, level.limit_usd), str(level.spent_tokens),
        _tokens(level.limit_tokens, level.limit_tokens),
        _tokens(level.left_tokens, level.limit_tokens),
        str(level.cache_read_tokens), str(level.cache_write_tokens),
        f"${level.reserved_usd:.4f}" if level.reserved_usd else "-",
    )


def _table(title: str, rows: list[tuple[str, ...]]) -> None:
    header = (title, "SPENT", "LIMIT", "LEFT", "TOKENS", "TOK LIMIT", "TOK LEFT",
              "CACHE READ", "CACHE WRITE", "IN FLIGHT")
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def print_spend(report: SpendReport) -> None:
    """The report as three tables: the day, the tenants, today's runs. A limit of ``-``
    is no limit."""
    start = datetime.fromtimestamp(report.starts_at, UTC)
    end = datetime.fromtimestamp(report.ends_at, UTC)
    print(f"day {report.day.name} ({report.timezone}; {start:%Y-%m-%d %H:%M} to "
          f"{end:%Y-%m-%d %H:%M} UTC)")
    _table("DAY", [_row(report.day, report.day.name)])
    print()
    _table("TENANT", [_row(level, level.name) for level in report.tenants])
    print()
    print("runs with model calls today (their spend today), newest first:")
    _table("RUN", [_row(level, f"{level.name} [{level.tenant}, {level.status}]")
                   for level in report.runs])
    if report.more_runs:
        print(f"(only the newest {len(report.runs)} runs are listed)")


def add_spend_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                       common: argparse.ArgumentParser) -> None:
    """``warden spend``, on the ``warden`` parser's subcommands."""
    spend = sub.add_parser(
        "spend", parents=[common], help="today's spend against the budgets",
        description="Today's spend and what is left at each budget level: the day "
        "(budgets.day_*), each tenant (budgets.tenant_day_*, budgets.tenants), and each run "
        "with model calls recorded today (its spend today; its limit is the run's budget). "
        "USD and tokens, with the cache read and cache write tokens of today's calls; "
        "'-' is no limit. Needs a running daemon.")
    spend.add_argument("--tenant", help="only this tenant and its runs")
    spend.add_argument("--json", action="store_true", help="the report as JSON")
    spend.set_defaults(func=cmd_spend, default_level="warning")
