"""Every ``__all__`` in ``warden.bus`` names only what exists, and the front door's is a
tuple without repeats (the shape of anyio's ``test_all_attributes.py``)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest
import warden.bus

MODULES = [warden.bus] + [
    importlib.import_module(info.name)
    for info in pkgutil.walk_packages(warden.bus.__path__, prefix="warden.bus.")
]


def test_the_front_door_declares_its_names_in_a_tuple() -> None:
    assert isinstance(warden.bus.__all__, tuple)
    assert len(set(warden.bus.__all__)) == len(warden.bus.__all__), "a name is listed twice"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_name_in_all_exists(module: ModuleType) -> None:
    names = getattr(module, "__all__", ())
    missing = [name for name in names if not hasattr(module, name)]
    assert not missing, f"{module.__name__}.__all__ names what it lacks: {missing}"
