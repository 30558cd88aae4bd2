"""The journal's audit chain: every event row is linked to the one before it by a hash,
so an edited, inserted or removed row shows (issue 11, point 5).

The rule (the spec): event ``seq`` has ``hash = sha256(JSON [prev, seq, run_id, kind,
status, message, data, created_at])`` in hex, where ``prev`` is the hash of the event
before it (``""`` for the first); the writer computes it inside the event's INSERT
(``warden_chain``, registered on the writer connection, ``journal_writer.py``), so the
chain follows the commit order. ``audit_head`` holds the last event's seq and hash.

``verify`` reads the rows in seq order and names the first that breaks the chain:

- ``edited``: its hash is not what its own fields and the previous hash give;
- ``removed``: a seq is missing (the first missing one is named; the newest rows gone:
  the head names a later seq than the last row);
- ``inserted``: a row whose hash is missing or that the head does not account for.

Events written before the chain existed (journal version < 4) have no hash and are
counted, not checked. The chain is **tamper-evident, not tamper-proof**: whoever can
write the file can recompute every hash after an edit; ``warden audit export`` writes the
chain as JSON lines for a store outside warden's reach, whose last hash then anchors it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

__all__ = ("CHAIN_FUNCTION", "AuditReport", "chain_hash", "export_events", "verify_journal")

CHAIN_FUNCTION = "warden_chain"

_encode = msgspec.json.encode


def chain_hash(prev: str | None, seq: int, run_id: str, kind: str, status: str, message: str,
               data: str | None, created_at: float) -> str:
    """The hash of one event linked to ``prev`` (the rule above); pure."""
    return hashlib.sha256(_encode(
        [prev or "", seq, run_id, kind, status, message, data, created_at])).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditReport:
    """What ``verify_journal`` found: ``problem`` ``None`` when the chain holds."""

    checked: int
    unchained: int
    problem: Literal["edited", "inserted", "removed"] | None = None
    seq: int | None = None
    detail: str = ""


_ROWS = ("SELECT seq, run_id, kind, status, message, data, created_at, hash FROM events "
         "ORDER BY seq")


def _connect(path: Path) -> sqlite3.Connection:
    """The journal read-only (a file that is not there is an error, not a new journal)."""
    if not path.is_file():
        raise FileNotFoundError(f"no journal at {path}")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def verify_journal(path: Path) -> AuditReport:
    """Check the audit chain of the journal at ``path`` (read-only; blocking)."""
    with _connect(path) as db:
        head = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        checked = unchained = 0
        prev: str | None = None
        last_seq: int | None = None
        for seq, run_id, kind, status, message, data, created_at, stored in db.execute(_ROWS):
            if stored is None and prev is None:
                unchained += 1  # written before the chain existed
                last_seq = seq
                continue
            expected_seq = 1 if last_seq is None else last_seq + 1
            if seq != expected_seq:
                return AuditReport(checked, unchained, "removed", expected_seq,
                                   f"seq {expected_seq}..{seq - 1} missing before seq {seq}")
            if stored is None:
                return AuditReport(checked, unchained, "inserted", seq,
                                   f"event seq {seq} has no hash: not written by warden")
            expected = chain_hash(prev, seq, run_id, kind, status, message, data, created_at)
            if stored != expected:
                return AuditReport(checked, unchained, "edited", seq,
                                   f"event seq {seq} does not hash to its stored hash (its "
                                   "fields or its hash were changed, or the row before it "
                                   "was)")
            checked += 1
            prev, last_seq = stored, seq
        if head is not None and last_seq is not None and prev is not None:
            head_seq, head_hash = head
            if head_seq > last_seq:
                return AuditReport(checked, unchained, "removed", last_seq + 1,
                                   f"the newest events are gone: the head names seq {head_seq}, "
                                   f"the last row is seq {last_seq}")
            if head_seq < last_seq or head_hash != prev:
                return AuditReport(checked, unchained, "inserted", head_seq + 1,
                                   f"events after seq {head_seq} (the head) were not written "
                                   "by warden")
        elif head is not None and last_seq is None:
            return AuditReport(0, unchained, "removed", head[0],
                               f"every event is gone: the head names seq {head[0]}")
    return AuditReport(checked, unchained)


def export_events(path: Path) -> Iterator[bytes]:
    """The journal's events as JSON lines (with their hashes), in seq order; read-only."""
    with _connect(path) as db:
        for seq, run_id, kind, status, message, data, created_at, stored in db.execute(_ROWS):
            yield _encode({"seq": seq, "run_id": run_id, "kind": kind, "status": status,
                           "message": message, "data": data, "created_at": created_at,
                           "hash": stored}) + b"\n"
