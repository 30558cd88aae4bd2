"""Every NATS subject, stream and queue group warden uses, in one place.

- ``warden.tasks``: JetStream stream ``WARDEN_TASKS`` (work queue, ``Nats-Msg-Id`` dedupe),
  task submissions, consumed by the durable consumer ``intake``;
- ``warden.runs.<run>.events``: JetStream stream ``WARDEN_EVENTS`` (limits), every change;
- ``warden.done.<run>``: core NATS, the run's last event when its run supervisor ends it,
  for clients that wait on many runs and need no other event (not stored: a client that
  subscribes late asks ``warden.api.show``);
- ``warden.work.<role>``: core request/reply, queue group ``workers``, turns for workers;
- ``warden.api.<verb>``: core request/reply: submit, runs, show, cancel, resume, dlq,
  dlq_retry, ping.

Nothing else in warden spells a subject; tests and the CLI import these too.
"""

from __future__ import annotations

import functools
import re

TASKS = "warden.tasks"
TASKS_STREAM = "WARDEN_TASKS"
TASKS_CONSUMER = "intake"

EVENTS_STREAM = "WARDEN_EVENTS"
EVENTS_WILDCARD = "warden.runs.*.events"
DONE_WILDCARD = "warden.done.*"

WORK_QUEUE_GROUP = "workers"

API_WILDCARD = "warden.api.*"
API_SUBMIT = "warden.api.submit"
API_RUNS = "warden.api.runs"
API_SHOW = "warden.api.show"
API_PING = "warden.api.ping"
API_CANCEL = "warden.api.cancel"
API_RESUME = "warden.api.resume"
API_DLQ = "warden.api.dlq"
API_DLQ_RETRY = "warden.api.dlq_retry"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


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


def work(role: str) -> str:
    """The subject a role's workers serve, as one queue group."""
    return f"warden.work.{_token(role, 'role')}"


def is_valid_id(value: str) -> bool:
    """Whether ``value`` can be used as a run id (a single subject token)."""
    return len(value) <= 128 and _is_token(value)


@functools.lru_cache(maxsize=4096)
def _is_token(value: str) -> bool:
    # Cached: the same ids are checked on every request of their runs (a string keeps
    # its hash); only short strings get here, so the cache stays small.
    return bool(_TOKEN.fullmatch(value))
