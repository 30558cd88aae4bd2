"""One intake per task stream, with two daemons in-process on the test's nats-server:
the second stands by naming the first (one log line, and in ``ping``), and takes the task
stream over at once when the first stops cleanly."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs
from warden.bus import subjects
from warden.bus.connection import Bus, open_bus
from warden.bus.wire import DaemonHealth, ErrorReply, reply_decoder
from warden.config import Settings
from warden.supervisor.daemon import Daemon, open_daemon

from tests.integration.harness import make_settings, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def _ping(client: Bus, daemon: Daemon) -> DaemonHealth:
    raw = await client.request(subjects.api(daemon.daemon_id, "ping"), b"{}", timeout=5)
    reply = reply_decoder.decode(raw)
    assert isinstance(reply, DaemonHealth), reply
    return reply


async def test_a_standby_daemon_names_the_holder_and_takes_over_when_it_stops(
    tmp_path: Path, nats_url: str,
) -> None:
    def settings(name: str) -> Settings:
        return make_settings(tmp_path / name, nats__url=nats_url, intake__lock_ttl_s=1.5,
                             local_workers=False)

    stop_first = anyio.Event()
    first_ready = anyio.Event()
    firsts: list[Daemon] = []

    async def run_first() -> None:
        async with open_daemon(settings("a")) as daemon:
            firsts.append(daemon)
            first_ready.set()
            await stop_first.wait()

    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_first)
            await first_ready.wait()
            first = firsts[0]
            async with open_daemon(settings("b")) as second, open_bus(nats_url) as client:
                standby = await _ping(client, second)
                holding = await _ping(client, first)
                refused = reply_decoder.decode(await client.request(
                    subjects.api(second.daemon_id, "submit"), b'{"text": "hello"}', timeout=5))
                stop_first.set()

                async def consuming() -> bool:
                    return (await _ping(client, second)).intake == "consuming"

                with anyio.fail_after(5):  # a clean stop hands over within one poll
                    await wait_for(consuming)
                # The task stream is the second's now: a task becomes a run in its journal.
                await client.publish(subjects.TASKS, b'{"text": ""}',
                                     headers={"Nats-Msg-Id": "after-handover"})

                async def taken() -> bool:
                    return await second.journal.run_status("after-handover") == "rejected"

                await wait_for(taken)
    assert holding.intake == "consuming" and holding.daemon_id == first.daemon_id
    assert standby.intake == "standby"
    assert (standby.intake_holder or "").startswith(f"{first.daemon_id} (pid ")
    assert isinstance(refused, ErrorReply)
    assert f"daemon {first.daemon_id} (pid " in refused.error
    lines = [e for e in logs if e["event"] == "intake_refused"]
    assert len(lines) == 1
    assert str(lines[0]["holder"]).startswith(first.daemon_id)
