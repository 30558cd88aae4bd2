"""Read one run's ``Recording`` (``recording.py``) from a journal file, read-only.

A plain ``sqlite3`` connection in ``mode=ro``: it reads beside a running daemon's writer
(WAL) and never writes, creates or migrates anything. Blocking: call it in a thread
(``anyio.to_thread.run_sync``). Only a journal module may open SQLite (the house rule),
hence here and not in ``replay.py``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec
from warden.supervisor.errors import JournalError, RunNotFoundError
from warden.supervisor.recording import (
    RecordedApproval,
    RecordedIntercept,
    RecordedModelCall,
    RecordedRun,
    RecordedStep,
    RecordedToolCall,
    Recording,
)

__all__ = ("read_recording",)


def read_recording(path: Path, run_id: str) -> Recording:
    """The recording of run ``run_id`` in the journal at ``path``. Blocks. Raises
    ``JournalError`` (no such file, not a journal) and ``RunNotFoundError``."""
    if not path.is_file():
        raise JournalError(str(path), "does not exist")
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise JournalError(str(path), f"cannot be read: {exc}") from exc
    try:
        return _read(conn, run_id)
    except sqlite3.Error as exc:
        raise JournalError(str(path), f"cannot be read: {exc}") from exc
    finally:
        conn.close()


def _json(text: str | None) -> Any:
    return msgspec.json.decode(text) if text else None


def _read(conn: sqlite3.Connection, run_id: str) -> Recording:
    row = conn.execute(
        "SELECT id, text, status, scenario, budget_usd, dry_run, epoch, result, error, plan "
        "FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise RunNotFoundError(run_id)
    run = RecordedRun(id=row[0], text=row[1], status=row[2], scenario=row[3],
                      budget_usd=row[4], dry_run=bool(row[5]), epoch=int(row[6]),
                      result=row[7], error=row[8], plan=row[9])
    steps = [RecordedStep(index=r[0], role=r[1], instruction=r[2], status=r[3],
                          output=r[4] or "")
             for r in conn.execute("SELECT idx, role, instruction, status, output FROM steps "
                                   "WHERE run_id = ? ORDER BY idx", (run_id,))]
    model_calls = [
        RecordedModelCall(key=r[0], purpose=r[1], model=r[2], request=_json(r[3]) or {},
                          response=_json(r[4]) or [], step=r[5], turn=r[6],
                          input_tokens=r[7], output_tokens=r[8], cache_creation_tokens=r[9],
                          cache_read_tokens=r[10], cost_usd=r[11], latency_ms=r[12])
        for r in conn.execute(
            "SELECT key, purpose, model, request, response, step, turn, input_tokens, "
            "output_tokens, cache_creation_tokens, cache_read_tokens, cost_usd, latency_ms "
            "FROM model_calls WHERE run_id = ? AND key IS NOT NULL ORDER BY id", (run_id,))
    ]
    tool_calls = [
        RecordedToolCall(key=r[0], step=r[1], tool=r[2], arguments=_json(r[3]) or {},
                         ok=None if r[4] != "done" else bool(r[5]), output=r[6] or "",
                         duration_ms=float(r[7] or 0.0))
        for r in conn.execute(
            "SELECT key, step, tool, arguments, state, ok, output, duration_ms FROM effects "
            "WHERE run_id = ? ORDER BY created_at, rowid", (run_id,))
    ]
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    approvals = [] if "approvals" not in tables else [
        RecordedApproval(id=r[0], call_key=r[1], step=r[2], tool=r[3],
                         arguments=_json(r[4]) or {}, risk=r[5], why=r[6], hash=r[7],
                         status=r[8], decided_by=r[9], reason=r[10])
        for r in conn.execute(
            "SELECT id, call_key, step, tool, arguments, risk, why, hash, status, "
            "decided_by, reason FROM approvals WHERE run_id = ? ORDER BY created_at, rowid",
            (run_id,))
    ]
    intercepted = [] if "dry_run_calls" not in tables else [
        RecordedIntercept(key=r[0], tool=r[1], decision=r[2], by=r[3], reason=r[4] or "")
        for r in conn.execute(
            "SELECT key, tool, decision, by, reason FROM dry_run_calls WHERE run_id = ? "
            "ORDER BY created_at, rowid", (run_id,))
    ]
    return Recording(run=run, steps=steps, model_calls=model_calls, tool_calls=tool_calls,
                     approvals=approvals, intercepted=intercepted)
