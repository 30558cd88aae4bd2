"""Regenerate the recorded scenarios of this folder (``warden eval examples/eval``).

Runs the shipped demo scenarios of the scripted model (``actors/scripts/demo.toml``) on a
daemon in-process, in a temporary data directory, under the default config, then saves
each run's recording as ``<name>.json`` (``warden replay RUN --save FILE`` does the same
for one run of yours). Run from the repository's root::

    .venv/bin/python examples/eval/regenerate.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
from warden.bus.connection import open_bus
from warden.bus.wire import TaskSubmission
from warden.config import load_settings
from warden.supervisor.cli import submit_and_follow
from warden.supervisor.daemon import JOURNAL_FILE, open_daemon
from warden.supervisor.dry_run import dry_run_id
from warden.supervisor.eval import Scenario, save_scenario
from warden.supervisor.journal_recording import read_recording

HERE = Path(__file__).resolve().parent

SCENARIOS: tuple[tuple[str, str, str | None, bool, str], ...] = (
    ("ledger", "Append three ledger lines.", "ledger", False,
     "three steps, each appends a ledger line (a medium-risk side effect the shipped roles "
     "auto-approve)"),
    ("ledger_dry_run", "Append three ledger lines.", "ledger", True,
     "the ledger task as a dry run: each append intercepted, not executed"),
    ("fizzbuzz", "Write fizzbuzz(n) in Python, with pytest tests.", None, False,
     "research lists files, code writes a module and its tests and runs it, review runs "
     "the tests"),
    ("slugify", "Write slugify(title) that turns titles into URL slugs, with pytest tests.",
     None, False, "the slugify demo task: files written, tests run"),
)


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="warden-eval-") as tmp:
        settings = load_settings(env={}, overrides={
            ("data_dir",): tmp, ("models", "provider"): "scripted",
            ("http", "enabled"): False,
        })
        ids: dict[str, str] = {}
        async with (
            open_daemon(settings) as daemon,
            open_bus(daemon.bus.url, name="warden-eval-regenerate",
                     credentials=daemon.credentials("client")) as bus,
        ):
            for name, text, scenario, dry_run, _ in SCENARIOS:
                run_id = f"eval-{name}"
                ids[name] = dry_run_id(run_id) if dry_run else run_id
                task = TaskSubmission(id=ids[name], text=text, scenario=scenario,
                                      dry_run=dry_run)
                status = await submit_and_follow(bus, task, wait=True, progress=False,
                                                 timeout=120)
                print(f"{ids[name]}: {status}")
        for name, _, _, _, description in SCENARIOS:
            recording = read_recording(Path(tmp) / JOURNAL_FILE, ids[name])
            save_scenario(HERE / f"{name}.json",
                          Scenario(name=name, description=description, recording=recording))
            print(f"wrote {HERE / f'{name}.json'}")


if __name__ == "__main__":
    anyio.run(main)
