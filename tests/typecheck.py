"""Run mypy over the ``warden`` namespace as it is installed.

mypy resolves imports from folders, not from setuptools' editable finder, and the
repository's folders (``supervisor/``, ``actors/``, ...) are installed as ``warden.*``
through ``package-dir``. So this script lays the same mapping out as symlinks under
``build/typecheck/warden`` (read from ``pyproject.toml``, never written twice) and runs
mypy on the package ``warden`` there. ``make check`` runs it; it exits with mypy's code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "typecheck"


def lay_out() -> Path:
    """Mirror the ``package-dir`` mapping as symlinks; return the folder to put on the path."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapping: dict[str, str] = settings["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(TREE, ignore_errors=True)
    top = TREE / "warden"
    top.mkdir(parents=True)
    for entry in (ROOT / mapping["warden"]).iterdir():
        if entry.suffix == ".py":
            (top / entry.name).symlink_to(entry)
    for package, folder in mapping.items():
        if package != "warden":
            (TREE / Path(*package.split("."))).symlink_to(ROOT / folder)
    return TREE


def main() -> int:
    tree = lay_out()
    env = {**os.environ, "MYPYPATH": str(tree)}
    command = [sys.executable, "-m", "mypy", "-p", "warden"]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
