"""The workspace every tool test works in."""

from __future__ import annotations

from pathlib import Path

import pytest
from warden.actors.workspace import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """An empty workspace of its own for the test."""
    root = tmp_path / "ws"
    root.mkdir()
    return Workspace(root)
