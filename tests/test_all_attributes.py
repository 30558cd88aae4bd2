"""Every ``__all__`` in warden names only what exists, and each package's front door
declares its names in a tuple without repeats (the shape of anyio's
``test_all_attributes.py``)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest
import warden.actors
import warden.actors.tools
import warden.bus
import warden.config
import warden.supervisor

FRONT_DOORS = [warden.actors, warden.actors.tools, warden.bus, warden.config,
               warden.supervisor]
MODULES = [
    importlib.import_module(info.name)
    for package in (warden.actors, warden.bus, warden.config, warden.supervisor)
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")
]


@pytest.mark.parametrize("package", FRONT_DOORS, ids=lambda p: p.__name__)
def test_the_front_door_declares_its_names_in_a_tuple(package: ModuleType) -> None:
    assert isinstance(package.__all__, tuple)
    assert len(set(package.__all__)) == len(package.__all__), "a name is listed twice"


@pytest.mark.parametrize("module", FRONT_DOORS + MODULES, ids=lambda m: m.__name__)
def test_every_name_in_all_exists(module: ModuleType) -> None:
    names = getattr(module, "__all__", ())
    missing = [name for name in names if not hasattr(module, name)]
    assert not missing, f"{module.__name__}.__all__ names what it lacks: {missing}"
