"""The supervisor package's front door and the modules of the run state machine, the
journal and the event stream: ``__all__`` is a tuple of names each module has."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "warden.supervisor",
    "warden.supervisor.errors",
    "warden.supervisor.run_states",
    "warden.supervisor.events",
    "warden.supervisor.journal",
    "warden.supervisor.journal_writer",
    "warden.supervisor.journal_schema",
    "warden.supervisor.daemon",
    "warden.supervisor.api",
    "warden.supervisor.intake",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_a_tuple_of_names_the_module_has(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(module.__all__, tuple)
    assert len(set(module.__all__)) == len(module.__all__)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing


def test_every_error_of_the_package_is_at_its_front_door_and_says_when_it_is_raised() -> None:
    import warden.supervisor as front
    from warden.supervisor import errors

    for name in errors.__all__:
        error = getattr(errors, name)
        assert getattr(front, name) is error
        assert issubclass(error, errors.SupervisorError)
        if name not in ("SupervisorError", "LimitReachedError"):  # roots: never raised
            assert "Raised when" in (error.__doc__ or ""), name
