"""A user's tool module, written to a temporary directory on ``sys.path`` for a test."""

from __future__ import annotations

import itertools
import sys
import textwrap
from pathlib import Path

import pytest

_numbers = itertools.count()


def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """Write ``source`` as a module of a fresh name under ``tmp_path``, importable for the
    rest of the test (and forgotten after it); returns its name."""
    name = f"user_tools_{next(_numbers)}"
    folder = tmp_path / "user_modules"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name
