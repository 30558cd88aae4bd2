"""Workers in another process join the role's queue group: `warden worker --role`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from warden.bus import subjects
from warden.bus.errors import NoRespondersError
from warden.bus.wire import event_decoder, turn_reply_decoder

from tests.integration.harness import make_settings, run_task, running_daemon

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_worker_in_another_process_serves_the_steps_of_its_role(tmp_path: Path) -> None:
    async with running_daemon(make_settings(tmp_path)) as (daemon, client):
        await daemon.root.terminate_child("worker.code")  # only the remote one is left
        # Workspaces live under each worker's own data dir (no host path on the wire): the
        # remote code worker shares the daemon's, as workers on one machine (or on one
        # mounted volume) do, so the local review worker sees what it wrote.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("WARDEN_") and k != "ANTHROPIC_API_KEY"}
        env["WARDEN_MODELS__PROVIDER"] = "scripted"
        # With --nats, a worker connects as configured: the worker identity's seed.
        env["WARDEN_NATS_NKEY_SEED"] = str(daemon.credentials("worker").nkey_seed)
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, reaped below
            [sys.executable, "-m", "warden", "worker", "--role", "code",
             "--nats", daemon.bus.url, "--data-dir", str(daemon.data_dir)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            with anyio.fail_after(30):  # until the remote worker answers on its subject
                while True:
                    try:
                        # Only the daemon identity may send work: its own connection.
                        raw = await daemon.bus.request(subjects.work("code"), b"{}",
                                                       timeout=2)
                    except NoRespondersError:
                        await anyio.sleep(0.05)
                        continue
                    assert "bad turn request" in (turn_reply_decoder.decode(raw).error or "")
                    break
            run = await run_task(client, "fizzbuzz")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(proc.wait, 10)
    assert run.status == "succeeded", run.error
    assert [s.status for s in run.steps] == ["succeeded"] * 3
    assert code == 0


async def test_with_local_workers_off_one_worker_process_serves_every_role(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, local_workers=False)
    async with running_daemon(settings) as (daemon, client):
        assert not [c for c in daemon.root.which_children() if c.name.startswith("worker.")]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("WARDEN_") and k != "ANTHROPIC_API_KEY"}
        env["WARDEN_MODELS__PROVIDER"] = "scripted"
        # With --nats, a worker connects as configured: the worker identity's seed.
        env["WARDEN_NATS_NKEY_SEED"] = str(daemon.credentials("worker").nkey_seed)
        roles = [arg for role in ("research", "code", "review") for arg in ("--role", role)]
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, reaped below
            [sys.executable, "-m", "warden", "worker", *roles, "--log-level", "error",
             "--nats", daemon.bus.url, "--data-dir", str(tmp_path / "worker")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None
            with anyio.fail_after(30):
                line = (await anyio.to_thread.run_sync(proc.stderr.readline,
                                                        abandon_on_cancel=True)).decode()
            assert "warden.work.research, warden.work.code, warden.work.review" in line
            async with client.subscribe(subjects.DONE_WILDCARD) as endings:
                run = await run_task(client, "fizzbuzz")
                with anyio.fail_after(10):
                    ending = event_decoder.decode((await endings.__anext__()).data)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(proc.wait, 10)
    assert run.status == "succeeded", run.error
    assert [s.status for s in run.steps] == ["succeeded"] * 3
    assert (ending.run_id, ending.status) == (run.id, "succeeded")
    assert code == 0
