"""Fixtures of the supervisor tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs


@pytest.fixture
def logs() -> Iterator[list[dict[str, object]]]:
    """Every structlog event emitted during the test, as dicts (``event``, ``log_level``,
    fields). Works because the root conftest leaves loggers uncached."""
    with capture_logs() as captured:
        yield captured
