"""A submission's tenant: checked where it is decoded and before the CLI publishes (an
error naming ``tenant`` / ``--tenant``), ``default`` when absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from warden.bus.wire import TaskSubmission, encoder
from warden.supervisor import cli as cli_module
from warden.supervisor.cli import UsageError, check_task, main
from warden.supervisor.intake import Rejection, check_submission
from warden.supervisor.run import state_of_new_run


@pytest.mark.parametrize("tenant", ["has space", "", "x" * 65, "a/b", "ünï"])
def test_a_bad_tenant_is_rejected_naming_the_field(tenant: str) -> None:
    data = TaskSubmission(text="hi", tenant=tenant)
    checked = check_submission(encoder.encode(data), max_bytes=1000,
                               fallback_id="t")
    assert isinstance(checked, Rejection) and checked.field == "tenant"
    with pytest.raises(UsageError, match="--tenant"):
        check_task(data, max_task_bytes=1000)


@pytest.mark.parametrize("tenant", ["acme", "team-7.eu_west", "x" * 64])
def test_a_good_tenant_is_taken(tenant: str) -> None:
    checked = check_submission(
        encoder.encode(TaskSubmission(text="hi", tenant=tenant)), max_bytes=1000,
        fallback_id="t")
    assert isinstance(checked, tuple) and checked[1].tenant == tenant


def test_a_run_without_a_tenant_is_the_default_tenants() -> None:
    checked = check_submission(b'{"text": "hi"}', max_bytes=1000, fallback_id="t")
    assert isinstance(checked, tuple) and checked[1].tenant is None
    assert state_of_new_run("r", "hi", None, None).tenant == "default"


def test_submit_with_a_bad_tenant_is_a_usage_error_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_, **__: None)
    code = main(["submit", "hi", "--tenant", "no spaces", "--data-dir", str(tmp_path)])
    assert code == 2
    assert "--tenant 'no spaces' must be 1-64 characters" in capsys.readouterr().err


def test_spend_with_a_bad_tenant_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli_module, "configure_logging", lambda *_, **__: None)
    assert main(["spend", "--tenant", "a b", "--data-dir", str(tmp_path)]) == 2
    assert "--tenant 'a b'" in capsys.readouterr().err
