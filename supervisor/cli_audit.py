"""``warden audit verify`` and ``warden audit export``: the journal's audit chain
(``journal_audit.py``), read from the data dir's journal file, read-only (a running daemon
may go on writing).

Exit codes: ``verify`` 0 when the chain holds, 1 naming the first row that breaks it;
both 2 when there is no journal (a usage error).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio
from warden.supervisor.cli import UsageError, _settings
from warden.supervisor.daemon import JOURNAL_FILE
from warden.supervisor.journal_audit import export_events, verify_journal

__all__ = ("add_audit_commands",)


def _journal(args: argparse.Namespace) -> Path:
    path = Path(_settings(args).data_dir) / JOURNAL_FILE
    if not path.is_file():
        raise UsageError(f"no journal at {path} (--data-dir)")
    return path


async def cmd_audit(args: argparse.Namespace) -> int:
    path = _journal(args)
    if args.action == "verify":
        report = await anyio.to_thread.run_sync(verify_journal, path)
        old = f", {report.unchained} written before the chain existed" \
            if report.unchained else ""
        if report.problem is None:
            print(f"ok: {report.checked} events, the chain holds{old} ({path})")
            return 0
        print(f"TAMPERED: event seq {report.seq} {report.problem}: {report.detail} "
              f"({report.checked} events checked before it{old}; {path})")
        return 1

    def export() -> int:
        count = 0
        out = sys.stdout.buffer if args.out in (None, "-") else open(args.out, "wb")
        try:
            for line in export_events(path):
                out.write(line)
                count += 1
        finally:
            if out is not sys.stdout.buffer:
                out.close()
            else:
                out.flush()
        return count

    count = await anyio.to_thread.run_sync(export)
    if args.out not in (None, "-"):
        print(f"wrote {count} events to {args.out}")
    return 0


def add_audit_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                       common: argparse.ArgumentParser) -> None:
    """``warden audit verify|export`` on the ``warden`` parser's subcommands."""
    audit = sub.add_parser(
        "audit", parents=[common], help="check or export the journal's audit chain",
        description="Every event in the journal is hash-chained to the one before. "
        "`verify` names the first event that was edited, inserted or removed (exit 1); "
        "`export` writes the events with their hashes as JSON lines, for a store "
        "outside warden's reach (whose last hash then anchors the chain).")
    audit.add_argument("action", choices=["verify", "export"])
    audit.add_argument("--out", metavar="FILE", help="export: write here (default stdout)")
    audit.set_defaults(func=cmd_audit, default_level="warning")
