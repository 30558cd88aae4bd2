"""Fixtures of the supervisor tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from warden.supervisor.journal import Journal, open_journal


@pytest.fixture
def logs() -> Iterator[list[dict[str, object]]]:
    """Every structlog event emitted during the test, as dicts (``event``, ``log_level``,
    fields). Works because the root conftest leaves loggers uncached."""
    with capture_logs() as captured:
        yield captured


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    """An empty journal on a real SQLite file in the test's directory (a module may
    override it, as test_events.py does with a run already created)."""
    async with open_journal(tmp_path / "journal.sqlite") as opened:
        yield opened
