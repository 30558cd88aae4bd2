"""``echo`` returns its text: ``echo.py``."""

from __future__ import annotations

import pytest
from warden.actors.workspace import Workspace

from tests.actors.tools.support import call


@pytest.mark.anyio
async def test_echo_returns_its_text_and_refuses_other_arguments(ws: Workspace) -> None:
    record = await call(ws, "echo", {"text": "same 200 bytes"})
    assert (record.ok, record.output) == (True, "same 200 bytes")
    refused = await call(ws, "echo", {"text": "x", "extra": 1})
    assert not refused.ok and "extra" in refused.output
