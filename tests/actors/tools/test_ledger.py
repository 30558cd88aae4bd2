"""``ledger_append`` appends one line per key, and reconciles by its key: ``ledger.py``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from warden.actors.tools import default_registry
from warden.actors.workspace import Workspace

from tests.actors.tools.support import context

pytestmark = pytest.mark.anyio


async def test_an_append_is_one_line_under_its_key_and_reconciles_as_acted(
    ws: Workspace, tmp_path: Path
) -> None:
    registry = default_registry()
    ctx = dataclasses.replace(context(ws), data_dir=tmp_path, idempotency_key="k-1")
    record = await registry.call(
        "ledger_append", {"text": "paid\n  invoice 7"}, ctx, allowlist=["ledger_append"]
    )
    assert (record.ok, record.output) == (True, "appended to ledger.txt as k-1")
    assert (tmp_path / "ledger.txt").read_text() == "k-1 r-1 paid invoice 7\n"
    acted = await registry.reconcile("ledger_append", {"text": "paid"}, ctx)
    assert acted is not None and acted.output == record.output


async def test_a_key_not_in_the_ledger_reconciles_as_not_acted(
    ws: Workspace, tmp_path: Path
) -> None:
    ctx = dataclasses.replace(context(ws), data_dir=tmp_path, idempotency_key="k-2")
    assert await default_registry().reconcile("ledger_append", {"text": "x"}, ctx) is None


async def test_without_a_data_directory_the_append_is_refused(ws: Workspace) -> None:
    registry = default_registry()
    record = await registry.call(
        "ledger_append", {"text": "x"}, context(ws), allowlist=["ledger_append"]
    )
    assert (record.ok, record.output) == (
        False, "tool 'ledger_append': needs a data directory and an idempotency key",
    )  # fmt: skip


async def test_a_simulated_append_says_what_it_would_append_and_writes_nothing(
    ws: Workspace, tmp_path: Path
) -> None:
    registry = default_registry()
    ctx = dataclasses.replace(context(ws), data_dir=tmp_path, idempotency_key="dry-k-1")

    record = await registry.simulate("ledger_append", {"text": "paid\n invoice 7"}, ctx,
                                     allowlist=["ledger_append"])

    assert (record.ok, record.output) == (
        True, "would append to ledger.txt as dry-k-1: 'paid invoice 7'")
    assert not (tmp_path / "ledger.txt").exists()
