"""The intake lease on a real nats-server: one holder at a time, taken back by its own
holder at once, lost by a holder that stops refreshing, handed over on release."""

from __future__ import annotations

import anyio
import pytest
from warden.bus.connection import open_bus

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

TTL = 1.0


async def test_a_second_holder_is_refused_and_told_who_holds_it(nats_url: str) -> None:
    async with open_bus(nats_url) as a_bus, open_bus(nats_url) as b_bus:
        a = await a_bus.lease(bucket="T_LOCKS", key="intake", holder="da", note="(pid 1)",
                              ttl=TTL)
        b = await b_bus.lease(bucket="T_LOCKS", key="intake", holder="db", note="(pid 2)",
                              ttl=TTL)
        assert await a.acquire() is None and a.held
        assert await b.acquire() == "da (pid 1)"
        assert not b.held
        assert await a.refresh()


async def test_the_same_holder_takes_its_own_lease_back_at_once(nats_url: str) -> None:
    # A restarted daemon (same data dir, same id) must not wait out its own lease.
    async with open_bus(nats_url) as bus:
        first = await bus.lease(bucket="T_LOCKS", key="intake", holder="da", note="(old)",
                                ttl=30.0)
        assert await first.acquire() is None
        again = await bus.lease(bucket="T_LOCKS", key="intake", holder="da", note="(new)",
                                ttl=30.0)
        assert await again.acquire() is None
        assert not await first.refresh()  # the old process's revision is stale now


async def test_a_holder_that_stops_refreshing_loses_the_lease_after_its_ttl(
    nats_url: str,
) -> None:
    async with open_bus(nats_url) as a_bus, open_bus(nats_url) as b_bus:
        a = await a_bus.lease(bucket="T_LOCKS", key="intake", holder="da", note="", ttl=TTL)
        b = await b_bus.lease(bucket="T_LOCKS", key="intake", holder="db", note="", ttl=TTL)
        assert await a.acquire() is None
        started = anyio.current_time()
        with anyio.fail_after(10 * TTL):
            while await b.acquire() is not None:  # noqa: ASYNC110 - polls as a standby daemon does
                await anyio.sleep(TTL / 10)
        waited = anyio.current_time() - started
        assert waited >= TTL * 0.9
        assert not await a.refresh()  # the killed holder, were it back, knows it lost


async def test_release_hands_over_at_once(nats_url: str) -> None:
    async with open_bus(nats_url) as a_bus, open_bus(nats_url) as b_bus:
        a = await a_bus.lease(bucket="T_LOCKS", key="intake", holder="da", note="", ttl=30.0)
        b = await b_bus.lease(bucket="T_LOCKS", key="intake", holder="db", note="", ttl=30.0)
        assert await a.acquire() is None
        assert await b.acquire() == "da "
        await a.release()
        assert await b.acquire() is None
