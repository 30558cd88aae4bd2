"""The dashboard in a real headless Chromium (Debian's ``/usr/bin/chromium``, driven by
Playwright): log in with the operator's seed → the runs list → open a run that waits for
an approval → approve it on the page → the run goes on to ``succeeded`` on the page by
itself (live events, no reload). The run's task text is hostile markup: it shows as text
and runs nothing.

With ``WARDEN_DASHBOARD_SHOTS=<folder>`` the test also saves the README's screenshots
there (``runs.png``, ``run.png``, ``approvals.png``, ``costs.png``)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from warden.bus.wire import RunSummary

from tests.integration.harness import run_task, running_daemon
from tests.integration.test_approvals import (  # noqa: F401 - effects is a fixture
    bumps,
    effects,
    pending,
    settings_for,
)
from tests.integration.test_dashboard import operator_seed

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script> bump once & "go"'

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is missing (`make chromium` installs it): NOT checked: "
               "the dashboard in a real browser (login, runs list, a run's timeline, "
               "approving on the page, the run's live update to its end, hostile text "
               "shown as text)"),
]

if CHROMIUM.exists():
    from playwright.async_api import Browser, Page, async_playwright, expect


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def shot(page: Page, name: str) -> None:
    folder = os.environ.get("WARDEN_DASHBOARD_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, in a test
        await page.screenshot(path=str(Path(folder) / name), full_page=True)


@pytest.mark.usefixtures("effects")
async def test_log_in_open_a_run_approve_its_call_and_see_it_finish_live(
        tmp_path: Path) -> None:
    settings = settings_for(tmp_path)  # bump is risk high: it always waits
    async with (
        running_daemon(settings, identity="operator") as (daemon, bus),
        chromium() as browser,
        anyio.create_task_group() as tg,
    ):
        earlier = await run_task(bus, "append three ledger lines", scenario="ledger")
        ended: list[RunSummary] = []

        async def go() -> None:
            ended.append(await run_task(bus, HOSTILE, scenario="bump"))

        tg.start_soon(go)
        (request,) = await pending(daemon)
        run_id = request.run_id

        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        dialogs: list[str] = []
        errors: list[str] = []
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        page.on("pageerror", lambda error: errors.append(str(error)))
        expect.set_options(timeout=15_000)

        # 1. Not logged in: the login page; the operator's seed opens the runs list.
        await page.goto(f"{daemon.http_url}/")
        await expect(page).to_have_url(re.compile(r"/login$"))
        await page.fill("#seed", operator_seed(daemon))
        await page.click("button[type=submit]")
        row = page.locator(f'#runs tr[data-run="{run_id}"]')
        await expect(row).to_contain_text("awaiting_approval")
        await expect(page.locator(f'#runs tr[data-run="{earlier.id}"]')).to_contain_text(
            "succeeded")
        await expect(page.locator("#live")).to_have_text("live")
        await shot(page, "runs.png")
        await page.evaluate("window.sameDocument = true")  # gone if the page reloads

        # 2. The approval queue lists the request.
        await page.click('header nav a[data-tab="approvals"]')
        card = page.locator(f'#approvals [data-approval="{request.id}"]')
        await expect(card).to_contain_text("bump")
        await expect(card).to_contain_text(request.hash)
        await shot(page, "approvals.png")

        # 3. Open the run: its text is shown as text; approve its call on the page.
        await page.click('header nav a[data-tab="runs"]')
        await row.locator("a.run-link").click()
        facts = page.locator("#run-facts")
        await expect(facts).to_have_attribute("data-status", "awaiting_approval")
        await expect(page.locator("#run-text")).to_have_text(HOSTILE)
        await page.locator(f'[data-approval="{request.id}"] input.reason').fill("checked")
        await page.locator(f'[data-approval="{request.id}"] button.approve').click()

        # 4. The run goes on to its end, on this page, by the live events alone.
        await expect(facts).to_have_attribute("data-status", "succeeded", timeout=20_000)
        await expect(page.locator(".step pre").first).to_contain_text("bumped one")
        await expect(page.locator(".call.tool:not(.refused)")).to_have_count(1)
        assert await page.evaluate("window.sameDocument") is True
        for details in await page.locator(".step details.call").all():  # the step's calls
            await details.evaluate("node => { node.open = true; }")
        await shot(page, "run.png")
        await page.click('header nav a[data-tab="costs"]')
        await expect(page.locator("#costs tbody tr").first).to_contain_text("claude")
        await shot(page, "costs.png")

        assert dialogs == [] and await page.evaluate("typeof window.pwned") == "undefined"
        assert errors == []
        decided = await daemon.journal.approval(request.id)
    (run,) = ended
    assert run.status == "succeeded", run.error
    assert bumps(tmp_path / "bumps.txt") == ["one"]
    assert decided is not None and decided.status == "approved"
    assert decided.reason == "checked"
