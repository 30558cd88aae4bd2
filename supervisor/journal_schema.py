"""The journal's SQL schema, its migrations and its guards (the tables are described in
``supervisor/journal.py``'s docstring). Plain text: only the journal's writer runs it.

The guards are triggers that apply the run state machine (``supervisor/run_states.py``)
inside SQLite: a run is created only in an initial status, and its status changes only
along ``TRANSITIONS``; anything else aborts the statement with ``GUARD_MESSAGE``. The
journal checks every change before it writes, so a guard fires only when that check was
bypassed (another writer, a bug): the write fails loudly instead of corrupting a run.
They are dropped and re-created at every open, so they always say what this warden's
table says; they change no table, so the schema version does not change with them.
"""

from __future__ import annotations

from warden.supervisor.run_states import INITIAL, TRANSITIONS

__all__ = (
    "ANOMALY_SCHEMA",
    "DRY_RUN_SCHEMA",
    "GUARD_MESSAGE",
    "INDEXES",
    "MIGRATE_DRY_RUN",
    "MIGRATE_FROM_1",
    "MIGRATE_FROM_2",
    "MIGRATE_FROM_3",
    "MIGRATE_FROM_5",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SPEND_SCHEMA",
    "status_guards",
)

SCHEMA_VERSION = 6
GUARD_MESSAGE = "refused by the run state machine"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    text TEXT NOT NULL,
    scenario TEXT,
    budget_usd REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT,
    plan TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    dry_run INTEGER NOT NULL DEFAULT 0,
    tenant TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs(status);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs(created_at);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    role TEXT NOT NULL,
    instruction TEXT NOT NULL,
    status TEXT NOT NULL,
    turns INTEGER NOT NULL DEFAULT 0,
    output TEXT NOT NULL DEFAULT '',
    tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS model_calls (
    id INTEGER PRIMARY KEY,
    key TEXT,
    run_id TEXT NOT NULL,
    step INTEGER,
    turn INTEGER,
    purpose TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    latency_ms REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS model_calls_by_run ON model_calls(run_id);
CREATE TABLE IF NOT EXISTS tool_calls (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    turn INTEGER NOT NULL,
    name TEXT NOT NULL,
    arguments TEXT NOT NULL,
    ok INTEGER NOT NULL,
    output TEXT NOT NULL,
    duration_ms REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tool_calls_by_run ON tool_calls(run_id);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    created_at REAL NOT NULL,
    hash TEXT
);
CREATE INDEX IF NOT EXISTS events_by_run ON events(run_id);
CREATE TABLE IF NOT EXISTS effects (
    key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    state TEXT NOT NULL,
    ok INTEGER,
    output TEXT,
    duration_ms REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS effects_by_run ON effects(run_id);
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    call_key TEXT NOT NULL UNIQUE,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    risk TEXT NOT NULL,
    why TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    status TEXT NOT NULL,
    decided_by TEXT,
    reason TEXT,
    decided_at REAL
);
CREATE INDEX IF NOT EXISTS approvals_by_status ON approvals(status);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    stream_seq INTEGER NOT NULL,
    msg_id TEXT,
    data BLOB NOT NULL,
    reason TEXT NOT NULL,
    deliveries INTEGER NOT NULL,
    created_at REAL NOT NULL,
    retried_at REAL
);
"""

INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS model_calls_by_key ON model_calls(key);
"""

MIGRATE_FROM_1 = """
ALTER TABLE runs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE model_calls ADD COLUMN key TEXT;
"""

# -- version 3, the dry-run piece (issue 10 point 5) -----------------------------------
# ``runs.dry_run`` (in ``SCHEMA`` above, added to an older file by ``MIGRATE_DRY_RUN``)
# and the table of what a dry run would have done, ``dry_run_calls`` (created with the
# rest, by ``DRY_RUN_SCHEMA``): one row per tool call of a dry run that would have acted,
# under the call's idempotency key. Other version-3 pieces join ``MIGRATE_FROM_2``.

DRY_RUN_SCHEMA = """
CREATE TABLE IF NOT EXISTS dry_run_calls (
    key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    turn INTEGER NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    decision TEXT NOT NULL,
    by TEXT NOT NULL,
    reason TEXT NOT NULL,
    output TEXT NOT NULL,
    simulated INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dry_run_calls_by_run ON dry_run_calls(run_id);
"""

MIGRATE_DRY_RUN = """
ALTER TABLE runs ADD COLUMN dry_run INTEGER NOT NULL DEFAULT 0;
"""

MIGRATE_FROM_2 = MIGRATE_DRY_RUN
"""From version 2 to 3 (after ``MIGRATE_FROM_1`` for a version-1 file). New tables come
with ``SCHEMA`` (``approvals``) and ``DRY_RUN_SCHEMA`` (``dry_run_calls``), created when
missing."""


def status_guards() -> str:
    """The triggers that refuse an illegal status, generated from the state machine's
    table (statuses are plain identifiers: nothing to quote)."""
    pairs = ", ".join(
        f"'{old}>{new}'" for old, news in sorted(TRANSITIONS.items()) for new in sorted(news)
    )
    initial = ", ".join(f"'{status}'" for status in sorted(INITIAL))
    return f"""
DROP TRIGGER IF EXISTS runs_status_guard;
CREATE TRIGGER runs_status_guard BEFORE UPDATE OF status ON runs
WHEN OLD.status || '>' || NEW.status NOT IN ({pairs})
BEGIN SELECT RAISE(ABORT, '{GUARD_MESSAGE}'); END;
DROP TRIGGER IF EXISTS runs_initial_guard;
CREATE TRIGGER runs_initial_guard BEFORE INSERT ON runs
WHEN NEW.status NOT IN ({initial})
BEGIN SELECT RAISE(ABORT, '{GUARD_MESSAGE}'); END;
"""


# -- version 4: the audit chain (issue 11 point 5; ``journal_audit.py``) ----------------
# ``events.hash`` chains each event to the one before (computed in the INSERT by the
# writer connection's ``warden_chain`` function); ``audit_head`` holds the last event's
# seq and hash (kept by a trigger), so that removing the newest events shows too. Events
# written before version 4 keep a NULL hash.

AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT
);
CREATE TRIGGER IF NOT EXISTS events_audit_head AFTER INSERT ON events
BEGIN
    INSERT OR REPLACE INTO audit_head (id, seq, hash) VALUES (1, NEW.seq, NEW.hash);
END;
"""

MIGRATE_FROM_3 = """
ALTER TABLE events ADD COLUMN hash TEXT;
"""
"""From version 3 to 4: the chain column; ``AUDIT_SCHEMA`` adds the rest."""


# -- version 5: anomaly flags (issue 11 point 6; ``journal_anomaly.py``, ``anomaly.py``) ---
# ``run_profiles``: one row per ended run that has a plan (its kind, the sequence of its
# roles, and the measures a baseline compares), written when the run ends; the baseline of
# a kind is its newest rows (``run_profiles_by_kind``). ``anomalies``: the flags of a run,
# one per kind, replaced when a resumed run ends again. From version 4 to 5 is new tables
# only, which ``ANOMALY_SCHEMA`` creates when missing: runs that ended before have no
# profile, so baselines start with the first run after.

ANOMALY_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_profiles (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    cost_usd REAL NOT NULL,
    duration_s REAL NOT NULL,
    retries INTEGER NOT NULL,
    tokens_per_step REAL NOT NULL,
    ended_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS run_profiles_by_kind ON run_profiles(kind, ended_at);
CREATE TABLE IF NOT EXISTS anomalies (
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value REAL NOT NULL,
    threshold REAL NOT NULL,
    detail TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (run_id, kind)
);
"""


# -- version 6: tenants and budgets (issue 12 point 1; ``spend.py``, ``journal_spend.py``) --
# ``runs.tenant``: the tenant a run was submitted for (NULL: ``default``, as every run
# from before version 6 is). ``model_calls_by_created``: the day's spend is the sum of the
# calls recorded since the day began, read at every daemon start and by ``warden spend``.

MIGRATE_FROM_5 = """
ALTER TABLE runs ADD COLUMN tenant TEXT;
"""
"""From version 5 (or older: any ``runs`` table without the column) to 6."""

SPEND_SCHEMA = """
CREATE INDEX IF NOT EXISTS model_calls_by_created ON model_calls(created_at);
"""
