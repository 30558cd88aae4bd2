"""The journal's audit chain (``supervisor/journal_audit.py``): every single-byte edit of
every field of every event, an inserted row and a removed row (anywhere, the newest too)
is found and named, on a real SQLite journal."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from pathlib import Path

import anyio
import pytest
from warden.supervisor.journal import open_journal
from warden.supervisor.journal_audit import chain_hash, export_events, verify_journal

pytestmark = pytest.mark.anyio

COLUMNS = ("run_id", "kind", "status", "message", "data", "created_at", "hash", "seq")


@pytest.fixture
async def chained(tmp_path: Path) -> Path:
    """A journal whose events table holds the events of three runs."""
    path = tmp_path / "journal.sqlite"
    async with open_journal(path) as journal:
        for n in range(3):
            run_id = f"r-{n}"
            await journal.create_run(run_id, text=f"task {n}", status="queued")
            await journal.transition(run_id, "planning", message="planning")
            await journal.record_event(run_id, "step_started", "planning", "step 0",
                                       b'{"step":0,"note":"\\u00e9t\\u00e9"}')
            await journal.transition(run_id, "running", message="plan of 1 step")
        await journal.sync()
    return path


def rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq").fetchall()


_copies = itertools.count()


def edited_copy(path: Path, tmp: Path, sql: str, *params: object) -> Path:
    """A copy of the (closed, checkpointed) journal with ``sql`` applied."""
    copy = tmp / f"copy-{next(_copies)}.sqlite"
    shutil.copyfile(path, copy)
    db = sqlite3.connect(copy)
    try:
        with db:
            db.execute(sql, params)
    finally:
        db.close()
    return copy


def one_byte_changed(value: object, at: int) -> object:
    """``value`` with one byte (character, or the last digit) changed."""
    if isinstance(value, str):
        at %= max(1, len(value))
        if not value:
            return "x"
        return value[:at] + chr(ord(value[at]) ^ 1) + value[at + 1:]
    if isinstance(value, float):
        return value + 1e-3
    if isinstance(value, int):
        return value ^ 1
    return "x"  # NULL data


async def test_an_untouched_journal_verifies(chained: Path) -> None:
    report = verify_journal(chained)
    assert report.problem is None
    assert report.checked == len(rows(chained)) > 10


async def test_each_hash_is_its_fields_linked_to_the_one_before(chained: Path) -> None:
    prev = None
    for run_id, kind, status, message, data, created_at, stored, seq in rows(chained):
        assert stored == chain_hash(prev, seq, run_id, kind, status, message, data, created_at)
        prev = stored


async def test_every_single_byte_edit_of_every_event_is_found_at_its_row(
    chained: Path, tmp_path: Path,
) -> None:
    found = tried = 0
    for row in rows(chained):
        seq = row[COLUMNS.index("seq")]
        for column in COLUMNS[:-1]:  # seq itself: below
            value = row[COLUMNS.index(column)]
            for at in {0, 1, 7, 1000}:
                changed = one_byte_changed(value, at)
                if changed == value:
                    continue
                copy = edited_copy(chained, tmp_path,
                                   f"UPDATE events SET {column} = ? WHERE seq = ?", changed, seq)
                report = verify_journal(copy)
                tried += 1
                found += report.problem is not None and report.seq == seq
    assert tried > 300
    assert found == tried  # 100 %


async def test_a_removed_row_is_named_wherever_it_was(chained: Path, tmp_path: Path) -> None:
    seqs = [row[-1] for row in rows(chained)]
    for seq in seqs:
        copy = edited_copy(chained, tmp_path, "DELETE FROM events WHERE seq = ?", seq)
        report = verify_journal(copy)
        assert (report.problem, report.seq) == ("removed", seq), report


async def test_an_inserted_row_is_named(chained: Path, tmp_path: Path) -> None:
    last = rows(chained)[-1]
    seq = int(str(last[-1])) + 1
    # (One with a hash recomputed by someone who knows the rule is a legitimate-looking
    # write: only an exported copy of the chain, outside the file, shows it.)
    for stored in (None, "0" * 64, str(last[COLUMNS.index("hash")])):
        copy = edited_copy(
            chained, tmp_path,
            "INSERT INTO events (seq, run_id, kind, status, message, data, created_at, hash) "
            "VALUES (?, 'r-0', 'note', 'running', 'approved by nobody', NULL, 1.0, ?)",
            seq, stored)
        report = verify_journal(copy)
        assert report.problem is not None and report.seq == seq, (stored, report)
    # A row moved into a gap left by a removed one: the chain breaks there.
    middle = rows(chained)[4]
    copy = edited_copy(chained, tmp_path, "UPDATE events SET seq = 1000 WHERE seq = ?",
                       middle[-1])
    assert verify_journal(copy).seq == middle[-1]


async def test_export_writes_each_event_with_its_hash(chained: Path) -> None:
    lines = list(export_events(chained))
    assert len(lines) == len(rows(chained))
    assert all(b'"hash":"' in line and line.endswith(b"\n") for line in lines)


async def test_the_cli_verifies_names_a_tampered_row_and_exports(
    chained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from warden.supervisor import cli as cli_module
    from warden.supervisor.cli import main
    from warden.supervisor.daemon import JOURNAL_FILE

    monkeypatch.setattr(cli_module, "configure_logging", lambda *_, **__: None)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(chained, data / JOURNAL_FILE)
    async def cli(*args: str) -> int:  # in a thread: main runs its own event loop
        return await anyio.to_thread.run_sync(main, [*args, "--data-dir", str(data)])

    assert await cli("audit", "verify") == 0
    assert "ok: " in capsys.readouterr().out
    out = tmp_path / "events.jsonl"
    assert await cli("audit", "export", "--out", str(out)) == 0
    assert len(out.read_bytes().splitlines()) == len(rows(chained))
    db = sqlite3.connect(data / JOURNAL_FILE)
    with db:
        db.execute("UPDATE events SET message = 'nothing to see' WHERE seq = 3")
    db.close()
    assert await cli("audit", "verify") == 1
    assert "TAMPERED: event seq 3 edited" in capsys.readouterr().out
    data = tmp_path / "nowhere"
    assert await cli("audit", "verify") == 2
