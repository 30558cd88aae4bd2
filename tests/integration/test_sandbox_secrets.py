"""Through a real daemon (``warden up``, its embedded nats-server, its SQLite journal):
model-written code that hunts for the API key finds it nowhere, and the key is in none of
the tool's output, the journal file or the daemon's logs.

The daemon is started with a canary ``ANTHROPIC_API_KEY`` in its environment (the
scripted model is forced, so the key is never sent anywhere), a ``HOME`` whose
``.ssh/id_ed25519`` holds the canary, and ``canary.txt`` in its data directory. The
scripted code step runs the probe of ``tests/actors/sandbox_probe.py`` with
``run_python``: every ``/proc/<pid>/environ`` and ``cmdline`` it can read, its own
environment, the data directory, ``~/.ssh``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.actors.conftest import available
from tests.actors.sandbox_probe import new_canary, probe_code
from tests.integration.warden_process import warden_up

pytestmark = [pytest.mark.integration]


def probe_script(tmp_path: Path, *, data_dir: Path, home: Path) -> str:
    code = probe_code(parent_pid="os.getppid()", data_dir=str(data_dir), home=str(home))
    path = tmp_path / "probe.toml"
    path.write_text(
        "[scenario.probe]\n"
        "[[scenario.probe.plan]]\n"
        'role = "code"\n'
        'instruction = "Look around."\n'
        "[[scenario.probe.turns.code]]\n"
        'tool = "run_python"\n'
        f"input = {{ code = {json.dumps(code)} }}\n"
        "[[scenario.probe.turns.code]]\n"
        'text = "Looked: {last_result}"\n',
        encoding="utf-8",
    )
    return str(path)


@pytest.mark.timeout(120)
def test_model_code_run_by_the_daemon_leaks_the_key_nowhere(tmp_path: Path) -> None:
    if all(isinstance(available(kind), str) for kind in ("bubblewrap", "uid")):
        pytest.skip("neither bubblewrap nor the uid isolation is available here: the "
                    f"daemon's secrets are not hidden, not checked ({available('bubblewrap')})")
    canary = new_canary()
    home, data = tmp_path / "home", tmp_path / "data"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".ssh" / "id_ed25519").write_text(f"-----BEGIN KEY-----\n{canary}\n")
    data.mkdir()
    (data / "canary.txt").write_text(canary)
    settings = {
        "models": {"provider": "scripted",
                   "script_files": [probe_script(tmp_path, data_dir=data, home=home)]},
        "limits": {"step_retries": 0},
    }
    with warden_up(tmp_path, settings, api_key=canary, env={"HOME": str(home)},
                   args=("--log-level", "debug")) as daemon:
        submitted = daemon.submit_wait("Probe the sandbox", "--scenario", "probe", timeout=90)
        assert canary.encode() in Path(f"/proc/{daemon.proc.pid}/environ").read_bytes()

    assert submitted.returncode == 0, submitted
    journal = b"".join(path.read_bytes() for path in data.glob("journal.sqlite*"))
    start = journal.index(b"PROBE {")
    found = json.loads(journal[start + 6:journal.index(b"}}", start) + 2])
    assert found["read"] > 0 and found["found"] == {}, found
    logs = (tmp_path / "warden-up.log").read_text(encoding="utf-8")
    assert "worker_sandbox" in logs
    for where, text in [("journal", journal.decode("utf-8", "replace")), ("logs", logs),
                        ("submit", submitted.stdout + submitted.stderr)]:
        assert canary not in text, where
