"""``warden approvals``, ``warden approve`` and ``warden deny``: the operator's side of
approvals (README, "Approvals").

    warden approvals [--json]              the pending requests
    warden approve ID [--reason R]         approve one, by id
    warden deny ID --reason R              deny one

All three connect as the ``operator`` identity. A decision names the request's id and
the hash the daemon listed for it, is signed with the operator's nkey seed (the one
``daemon.json`` names, or ``nats.nkey_seed`` on an external server) and published to the
``WARDEN_APPROVALS`` stream; the command then waits (``--timeout``) for the daemon's
outcome on ``warden.approvals.<run>.outcome``. Exit codes: 0 applied; 1 refused (the
reason on stderr: stale, replayed, mismatched, not the operator); 2 bad usage or no such
pending request; 3 no daemon judged it in time (it stays in the stream and is judged when
one runs).
"""

from __future__ import annotations

import argparse
import functools
import time
from datetime import datetime
from pathlib import Path
from typing import Literal

from warden.bus import subjects
from warden.bus.connection import Bus
from warden.bus.errors import BusError
from warden.bus.signing import sign_decision
from warden.bus.wire import (
    ApprovalInfo,
    ApprovalList,
    ApprovalsQuery,
    encoder,
)
from warden.config import Settings
from warden.supervisor.approvals import info_of
from warden.supervisor.cli import (
    UsageError,
    _open_client,
    _request,
    _say,
    _settings,
    daemon_id_for,
    read_daemon_file,
)
from warden.supervisor.daemon import JOURNAL_FILE
from warden.supervisor.decisions import decide
from warden.supervisor.journal import open_journal_reader

__all__ = ("add_approval_commands", "cmd_approvals", "cmd_decide")


async def _pending(bus: Bus, settings: Settings, daemon: str | None) -> list[ApprovalInfo]:
    daemon_id = await daemon_id_for(bus, settings, daemon)
    listing = await _request(bus, daemon_id, "approvals", ApprovalsQuery(),
                             settings.nats.request_timeout_s)
    assert isinstance(listing, ApprovalList)
    return listing.approvals


async def _find(bus: Bus, settings: Settings, daemon: str | None, approval_id: str
                ) -> ApprovalInfo | None:
    """The pending request ``approval_id``, from the daemon; when none answers, from the
    data dir's journal (read-only), so a decision can be stored while the daemon is down
    (on an external server) and applied when it is back."""
    try:
        pending = await _pending(bus, settings, daemon)
    except (UsageError, BusError) as exc:
        path = Path(settings.data_dir).resolve() / JOURNAL_FILE  # noqa: ASYNC240 - once
        if not path.exists():
            raise
        _say(f"{exc}: request {approval_id!r} read from {path}")
        async with open_journal_reader(path) as journal:
            record = await journal.approval(approval_id)
        return info_of(record) if record is not None and record.status == "pending" else None
    return next((r for r in pending if r.id == approval_id), None)


async def cmd_approvals(args: argparse.Namespace) -> int:
    settings = _settings(args)
    async with _open_client(settings, "operator", "warden-cli") as bus:
        pending = await _pending(bus, settings, args.daemon)
    if args.json:
        print(encoder.encode(pending).decode())
        return 0
    for request in pending:
        left = max(0.0, request.expires_at - time.time())
        print(f"{request.id}  run {request.run_id}  {request.tool} ({request.risk})  "
              f"expires in {left:.0f} s\n"
              f"    arguments: {encoder.encode(request.arguments).decode()[:200]}\n"
              f"    why: {request.why}\n"
              f"    hash: {request.hash}")
    print(f"{len(pending)} pending approval requests")
    return 0


def _operator_seed(settings: Settings) -> Path:
    """The operator's seed file: the one ``daemon.json`` names, else ``nats.nkey_seed``."""
    if settings.nats.url is None:
        info = read_daemon_file(Path(settings.data_dir).resolve())
        seed = None if info is None else info.seeds.get("operator")
        if seed is not None:
            return Path(seed)
    if settings.nats.nkey_seed:
        return Path(settings.nats.nkey_seed)
    raise UsageError("no operator nkey seed to sign the decision with: run against the "
                     "local daemon, or set nats.nkey_seed (WARDEN_NATS_NKEY_SEED)")


async def cmd_decide(args: argparse.Namespace) -> int:
    """``approve`` and ``deny``: sign, publish, wait for the daemon's outcome."""
    settings = _settings(args)
    verdict: Literal["approve", "deny"] = "approve" if args.command == "approve" else "deny"
    if verdict == "deny" and not (args.reason or "").strip():
        raise UsageError("`warden deny` needs --reason: the model and the audit read it")
    seed = _operator_seed(settings)
    async with _open_client(settings, "operator", "warden-cli") as bus:
        request = await _find(bus, settings, args.daemon, args.id)
        if request is None:
            raise UsageError(f"no pending approval request {args.id!r} (see `warden "
                             "approvals`: it may be decided, expired or unknown)")
        if args.hash is not None and args.hash != request.hash:
            raise UsageError(f"--hash {args.hash!r} is not the hash of request {args.id!r} "
                             f"({request.hash}): its call is not the one you checked")
        decided = await decide(bus, request, verdict, args.reason or "",
                               functools.partial(sign_decision, seed_file=seed),
                               publish_timeout=settings.nats.request_timeout_s,
                               outcome_timeout=args.timeout)
    outcome = decided.outcome
    if outcome is not None and outcome.applied:
        print(f"{request.id}: {outcome.status} ({request.tool} of run {request.run_id})")
        return 0
    if outcome is not None:
        _say(f"decision on {request.id} {outcome.reason}")
        return 1
    when = datetime.now().astimezone().isoformat(timespec="seconds")
    _say(f"decision on {request.id} stored in {subjects.APPROVALS_STREAM} (seq {decided.seq}, "
         f"{when}) but no daemon judged it within {args.timeout:g} s: it is judged when "
         "one takes it (`warden approvals` shows whether it is still pending)")
    return 3


def add_approval_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                          common: argparse.ArgumentParser) -> None:
    """The three commands, on the ``warden`` parser's subcommands."""
    listing = sub.add_parser("approvals", parents=[common], help="list pending approvals",
                             description="The approval requests waiting for a decision: "
                             "id, run, tool, arguments, risk, why, hash and expiry.")
    listing.add_argument("--json", action="store_true", help="a JSON list")
    listing.set_defaults(func=cmd_approvals, default_level="warning")
    for name, text in (("approve", "approve a pending request"),
                       ("deny", "deny a pending request")):
        parser = sub.add_parser(name, parents=[common], help=text,
                                description=text + ", as the operator identity: the "
                                "decision is signed, names the request's hash, and is "
                                "refused if stale, replayed or mismatched.")
        parser.add_argument("id", help="the request's id (ap-...)")
        parser.add_argument("--reason", required=name == "deny",
                            help="why (required to deny)")
        parser.add_argument("--hash", help="refuse unless the request's hash is this one "
                                           "(the one you checked)")
        parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                            help="wait S seconds for the daemon's outcome (default 10)")
        parser.set_defaults(func=cmd_decide, default_level="warning")
