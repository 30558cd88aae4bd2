"""Every NATS subject, stream and queue group warden uses, in one place.

- ``warden.tasks``: JetStream stream ``WARDEN_TASKS`` (work queue, ``Nats-Msg-Id`` dedupe),
  task submissions, consumed by the durable consumer ``intake``;
- ``warden.runs.<run>.events``: JetStream stream ``WARDEN_EVENTS`` (limits), every change;
- ``warden.done.<run>``: core NATS, the run's last event when its run supervisor ends it,
  for clients that wait on many runs and need no other event (not stored: a client that
  subscribes late asks the API's ``show``);
- ``warden.work.<role>``: core request/reply, queue group ``workers``, turns for workers;
- ``warden.api.<daemon>.<verb>``: the API, a ``nats.micro`` service named ``warden``
  (``$SRV.PING.warden`` finds every daemon on the server); ``<daemon>`` is the daemon's
  id, so a client addresses exactly one daemon. Verbs: submit, runs, show, cancel,
  resume, dlq, dlq_retry, ping, approvals, calls;
- ``warden.approvals.<run>``: core NATS, each approval request of the run, for watchers;
- ``warden.approvals.<run>.decision``: JetStream stream ``WARDEN_APPROVALS`` (limits, file
  storage), the operator's signed decisions, consumed by the daemon's durable consumer
  ``approver``; ``warden.approvals.<run>.outcome``: core NATS, the daemon's answer to each
  (README, "Approvals");
- KV bucket ``WARDEN_LOCKS``, key ``intake``: which daemon consumes the task stream.

Nothing else in warden spells a subject; tests and the CLI import these too.
"""

from __future__ import annotations

import functools
import re
from typing import Literal, get_args

TASKS = "warden.tasks"
TASKS_STREAM = "WARDEN_TASKS"
TASKS_CONSUMER = "intake"

EVENTS_STREAM = "WARDEN_EVENTS"
EVENTS_WILDCARD = "warden.runs.*.events"
DONE_WILDCARD = "warden.done.*"

WORK_QUEUE_GROUP = "workers"

SERVICE_NAME = "warden"
"""The ``nats.micro`` service name every daemon's API registers under."""
API_PREFIX = "warden.api"
API_WILDCARD = f"{API_PREFIX}.>"
"""Every daemon's API subjects (for permissions): ``warden.api.<daemon>.<verb>``."""
SERVICE_DISCOVERY = "$SRV.>"
"""The ``nats.micro`` discovery subjects ($SRV.PING / INFO / STATS), for permissions."""
SERVICE_PING = f"$SRV.PING.{SERVICE_NAME}"
"""Every running warden API answers a request here with its identity."""

ApiVerb = Literal["submit", "runs", "show", "ping", "cancel", "resume", "dlq", "dlq_retry",
                  "approvals", "calls", "spend"]
API_VERBS: tuple[ApiVerb, ...] = get_args(ApiVerb)

APPROVALS_STREAM = "WARDEN_APPROVALS"
APPROVALS_CONSUMER = "approver"
DECISIONS_WILDCARD = "warden.approvals.*.decision"

LOCKS_BUCKET = "WARDEN_LOCKS"
INTAKE_LOCK = "intake"

MAX_ID = 128
"""The longest run id (and subject token) warden accepts."""

_TOKEN = re.compile(rf"^[A-Za-z0-9_-]{{1,{MAX_ID}}}$")


def _token(value: str, what: str) -> str:
    # A subject token must not contain '.', '*', '>' or spaces, or it would address
    # other subjects; ids come from users, so they are checked here, once.
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a valid subject token ([A-Za-z0-9_-], 1-128)")
    return value


def run_events(run_id: str) -> str:
    """The subject of one run's events."""
    return f"warden.runs.{_token(run_id, 'run id')}.events"


def run_done(run_id: str) -> str:
    """The subject of one run's ending (its last event, not stored)."""
    return f"warden.done.{_token(run_id, 'run id')}"


def approvals(run_id: str) -> str:
    """The subject a run's approval requests are published on."""
    return f"warden.approvals.{_token(run_id, 'run id')}"


def approval_decision(run_id: str) -> str:
    """The subject (stream ``WARDEN_APPROVALS``) of decisions on a run's requests."""
    return f"{approvals(run_id)}.decision"


def approval_outcome(run_id: str) -> str:
    """The subject of the daemon's outcomes of decisions on a run's requests."""
    return f"{approvals(run_id)}.outcome"


def work(role: str) -> str:
    """The subject a role's workers serve, as one queue group."""
    return f"warden.work.{_token(role, 'role')}"


def api(daemon_id: str, verb: ApiVerb) -> str:
    """The subject of one daemon's API verb: ``warden.api.<daemon_id>.<verb>``."""
    return f"{API_PREFIX}.{_token(daemon_id, 'daemon id')}.{verb}"


def is_valid_id(value: str) -> bool:
    """Whether ``value`` can be used as a run id (a single subject token)."""
    return len(value) <= MAX_ID and _is_token(value)


@functools.lru_cache(maxsize=4096)
def _is_token(value: str) -> bool:
    # Cached: the same ids are checked on every request of their runs (a string keeps
    # its hash); only short strings get here, so the cache stays small.
    return bool(_TOKEN.fullmatch(value))
