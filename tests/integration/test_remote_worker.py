"""Workers in another process join the role's queue group: `warden worker --role`."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from warden.bus import subjects
from warden.bus.errors import NoRespondersError
from warden.bus.wire import event_decoder, turn_reply_decoder

from tests.integration.harness import make_settings, run_task, running_daemon, worker_process

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_a_worker_in_another_process_serves_the_steps_of_its_role(tmp_path: Path) -> None:
    async with running_daemon(make_settings(tmp_path)) as (daemon, client):
        await daemon.root.terminate_child("worker.code")  # only the remote one is left
        # Workspaces live under each worker's own data dir (no host path on the wire): the
        # remote code worker shares the daemon's, as workers on one machine (or on one
        # mounted volume) do, so the local review worker sees what it wrote.
        async with worker_process(daemon, ["code"], daemon.data_dir) as worker:
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
    assert run.status == "succeeded", run.error
    assert [s.status for s in run.steps] == ["succeeded"] * 3
    assert worker.returncode == 0


async def test_with_local_workers_off_one_worker_process_serves_every_role(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, local_workers=False)
    async with running_daemon(settings) as (daemon, client):
        assert not [c for c in daemon.root.which_children() if c.name.startswith("worker.")]
        roles = ["research", "code", "review"]
        async with worker_process(daemon, roles, tmp_path / "worker") as worker:
            assert "warden.work.research, warden.work.code, warden.work.review" in worker.banner
            async with client.subscribe(subjects.DONE_WILDCARD) as endings:
                run = await run_task(client, "fizzbuzz")
                with anyio.fail_after(10):
                    ending = event_decoder.decode((await endings.__anext__()).data)
    assert run.status == "succeeded", run.error
    assert [s.status for s in run.steps] == ["succeeded"] * 3
    assert (ending.run_id, ending.status) == (run.id, "succeeded")
    assert worker.returncode == 0
