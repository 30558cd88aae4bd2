"""Runs the anomaly rules (``anomaly.py``) on every run that ends, off the run's path.

``AnomalyWatch`` is an observer of the event stream that takes ``status`` events only (so
it costs nothing per call): a terminal status puts the run's id on a bounded queue and
returns at once. Its ``run`` (a child of the daemon's root supervisor, started before the
runs and stopped after them) reads each ended run back from the journal, compares it with
its baseline, records its profile and flags (``journal_anomaly.py``), counts each flag
(``on_flag``: ``warden_anomalies_total{kind}``) and logs ``anomaly_flagged``.

Rejected, cancelled and dry runs are not assessed. A full queue drops the run
(``anomaly_queue_full``): flags are advice, never a reason to slow a run down. A run that
fails to be assessed is logged (``anomaly_assessment_failed``) and the watch goes on.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream
from warden.config.settings import AnomalySettings
from warden.supervisor.anomaly import Flag, assess
from warden.supervisor.events import Event, EventKind
from warden.supervisor.journal import Journal
from warden.supervisor.journal_anomaly import baseline, ended_run, record_assessment
from warden.supervisor.run_states import TERMINAL, RunStatus

__all__ = ("AnomalyWatch",)

log = structlog.get_logger("warden.anomaly")

_QUEUE = 1024
_NOT_ASSESSED: frozenset[RunStatus] = frozenset({"rejected", "cancelled"})
_ASSESSED: frozenset[str] = frozenset(TERMINAL - _NOT_ASSESSED)


class AnomalyWatch:
    """Observer of run endings and the task that assesses them; see the module docstring."""

    def __init__(self, journal: Journal, settings: AnomalySettings, *,
                 on_flag: Callable[[Flag], None] | None = None) -> None:
        self.journal = journal
        self.settings = settings
        self.on_flag = on_flag
        self._send: MemoryObjectSendStream[str] | None = None
        """The queue of ended runs, open while ``run`` runs."""
        self.assessed = 0
        """Runs assessed so far (profiled and flagged, or found not comparable)."""

    def takes(self, kind: EventKind) -> bool:
        return kind == "status"

    async def observe(self, event: Event) -> None:
        send = self._send
        if event.status not in _ASSESSED or send is None:
            return
        try:
            send.send_nowait(event.run_id)
        except anyio.WouldBlock:
            log.warning("anomaly_queue_full", run_id=event.run_id)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Assess each ended run, one at a time, until cancelled."""
        send, receive = anyio.create_memory_object_stream[str](_QUEUE)
        with send, receive:
            self._send = send
            task_status.started()
            try:
                async for run_id in receive:
                    try:
                        await self.assess(run_id)
                    except Exception as exc:
                        log.warning("anomaly_assessment_failed", run_id=run_id,
                                    error=repr(exc))
            finally:
                self._send = None

    async def assess(self, run_id: str) -> list[Flag]:
        """Assess ended run ``run_id`` now: record its profile and flags; return the flags.
        A cancellation point; raises ``JournalError``."""
        run = await ended_run(self.journal, run_id)
        if run is None or run.dry_run or run.status not in _ASSESSED:
            return []
        settings = self.settings
        comparable = (await baseline(self.journal, run.profile.kind,
                                     limit=max(0, settings.baseline_runs), excluding=run_id)
                      if run.profile.kind else [])
        flags = assess(run.profile, comparable, run.uses, settings)
        await record_assessment(self.journal, run, flags)
        self.assessed += 1
        for flag in flags:
            log.warning("anomaly_flagged", run_id=run_id, kind=flag.kind,
                        value=flag.value,
                        detail=flag.detail)
            if self.on_flag is not None:
                self.on_flag(flag)
        return flags
