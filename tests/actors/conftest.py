"""The sandbox's isolations this host offers, as a fixture to run a test under each."""

from __future__ import annotations

import functools

import pytest
from warden.actors.errors import SandboxUnavailableError
from warden.actors.isolation import SandboxIsolation, choose_isolation
from warden.config.settings import SandboxSettings


@functools.cache
def available(kind: str) -> SandboxIsolation | str:
    """The isolation ``kind`` as this host gives it, or why it cannot."""
    try:
        return choose_isolation(SandboxSettings(isolation=kind))  # type: ignore[arg-type]
    except SandboxUnavailableError as exc:
        return str(exc)


def require(kind: str) -> SandboxIsolation:
    """The isolation ``kind``, or skip the test saying which protection was not checked."""
    chosen = available(kind)
    if isinstance(chosen, str):
        pytest.skip(f"{kind} isolation not checked: {chosen}")
    return chosen


@pytest.fixture(params=["bubblewrap", "none"])
def isolation(request: pytest.FixtureRequest) -> str:
    """Each isolation a workspace anywhere can use (``uid`` needs one its user can reach:
    tests/actors/test_sandbox_isolation.py covers it); skipped where not available."""
    require(request.param)
    return str(request.param)
