"""Identities, their seeds and the rendered permissions; credentials and their secrets.

What the server does with the permissions is pinned on a real server in
``tests/integration/test_bus_identities.py``; here: the files, the rendering, the README's
copy, and that no secret reaches a repr or an error message.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import anyio
import nkeys
import pytest
from structlog.testing import capture_logs
from warden.bus import subjects
from warden.bus.credentials import Credentials
from warden.bus.errors import CredentialsError
from warden.bus.identities import (
    IDENTITIES,
    PERMISSIONS,
    PLACEHOLDER_KEYS,
    ensure_seeds,
    inbox_prefix,
    is_reply_to,
    public_key,
    render_authorization,
)
from warden.config import load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- seeds ---------------------------------------------------------------------------------


def test_seeds_are_made_one_per_identity_private_and_valid(tmp_path: Path) -> None:
    directory = tmp_path / "credentials"
    with capture_logs() as logs:
        seeds = ensure_seeds(directory)
    assert list(seeds) == list(IDENTITIES)
    assert _mode(directory) == 0o700
    assert {i: _mode(p) for i, p in seeds.items()} == {i: 0o600 for i in IDENTITIES}
    texts = [p.read_text().strip() for p in seeds.values()]
    assert all(t.startswith("SU") for t in texts) and len(set(texts)) == len(IDENTITIES)
    keys = [public_key(p) for p in seeds.values()]
    assert all(k.startswith("U") for k in keys)
    assert keys[0] == nkeys.from_seed(bytearray(texts[0].encode())).public_key.decode()
    assert not [t for t in texts if t in repr(logs)]  # the paths are logged, never a seed
    assert sorted(p.name for p in directory.iterdir()) == sorted(f"{i}.nk" for i in IDENTITIES)


def test_seeds_are_reused_and_an_open_one_is_tightened(tmp_path: Path) -> None:
    first = {i: p.read_bytes() for i, p in ensure_seeds(tmp_path).items()}
    (tmp_path / "client.nk").chmod(0o644)
    again = ensure_seeds(tmp_path)
    assert {i: p.read_bytes() for i, p in again.items()} == first
    assert _mode(tmp_path / "client.nk") == 0o600


@pytest.mark.parametrize("content", [b"not a seed\n", b"SAANOTAUSERSEED\n", b"SUXXXX\n"])
def test_a_broken_seed_is_an_error_naming_the_file_not_its_content(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "worker.nk").write_bytes(content)
    (tmp_path / "worker.nk").chmod(0o600)
    with pytest.raises(CredentialsError) as broken:
        ensure_seeds(tmp_path)
    assert str(tmp_path / "worker.nk") in str(broken.value)
    assert content.decode().strip() not in str(broken.value)


# -- the rendered permissions -----------------------------------------------------------------


def _users(block: str) -> dict[str, str]:
    """Each ``# identity`` comment's user entry in a rendered block."""
    return dict(re.findall(r"# (\w+)\n(.*?\n    })", block, flags=re.S))


def test_the_authorization_block_admits_exactly_the_given_keys() -> None:
    block = render_authorization({"daemon": "UDAEMON", "client": "UCLIENT"})
    users = _users(block)
    assert list(users) == ["daemon", "client"]
    assert 'nkey: "UDAEMON"' in users["daemon"] and 'nkey: "UCLIENT"' in users["client"]
    assert "no_auth_user" not in block and "password" not in block
    assert block.startswith("authorization {") and block.rstrip().endswith("}")


def test_the_worker_may_publish_nothing_but_replies() -> None:
    worker = _users(render_authorization(PLACEHOLDER_KEYS))["worker"]
    assert 'publish: { deny: [">"] }' in worker
    assert "allow_responses: true" in worker
    assert '"warden.work.* workers"' in worker


def test_no_identity_but_the_daemon_and_the_worker_reaches_the_work_subjects() -> None:
    for identity in ("client", "operator"):
        perms = PERMISSIONS[identity]
        assert not [s for s in perms.publish_allow if s.startswith("warden.work")]
        assert "warden.work.>" in perms.publish_deny
        assert not [s for s in perms.subscribe_allow if s.startswith("warden.work")]
        assert not perms.allow_responses


def test_every_api_verb_is_a_client_or_an_operator_verb_of_any_daemon() -> None:
    client, operator = PERMISSIONS["client"], PERMISSIONS["operator"]
    for verb in subjects.API_VERBS:
        wanted = f"{subjects.API_PREFIX}.*.{verb}"
        assert wanted in operator.publish_allow, verb
        assert (wanted in client.publish_allow) is (
            verb not in ("dlq", "dlq_retry", "approvals", "calls")), verb


def test_only_the_operator_and_the_daemon_may_publish_approval_decisions() -> None:
    decision = subjects.approval_decision("r-1")
    for identity, perms in PERMISSIONS.items():
        allowed = any(_matches(pattern, decision) for pattern in perms.publish_allow)
        assert allowed is (identity in ("daemon", "operator")), identity


def _matches(pattern: str, subject: str) -> bool:
    wanted, given = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(given) > i
        if i >= len(given) or token not in ("*", given[i]):
            return False
    return len(wanted) == len(given)


def test_every_identity_subscribes_to_its_own_inbox_and_no_other() -> None:
    for identity in IDENTITIES:
        inboxes = [s for s in PERMISSIONS[identity].subscribe_allow if s.startswith("_INBOX")]
        assert inboxes == [f"_INBOX_{identity}.>"]
        assert inbox_prefix(identity) == f"_INBOX_{identity}"


def test_a_reply_is_the_daemons_only_in_the_daemons_inbox() -> None:
    assert is_reply_to("daemon", "_INBOX_daemon.xyz.12")
    assert not is_reply_to("daemon", "_INBOX_daemonic.xyz.12")
    assert not is_reply_to("daemon", "_INBOX.xyz.12")
    assert not is_reply_to("daemon", "_INBOX_client.xyz.1")
    assert not is_reply_to("daemon", "$JS.ACK.WARDEN_EVENTS.c.1.1.1.1796302582113595993.0")
    assert not is_reply_to("daemon", "")


def test_subjects_with_a_dollar_are_quoted_for_the_server_config() -> None:
    block = render_authorization(PLACEHOLDER_KEYS)
    assert '"$JS.API.>"' in block and not re.search(r"[\[ ,]\$", block)


def test_the_readme_shows_the_block_the_module_renders() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- nats-permissions: begin -->\n```\n(.*?)```\n"
                      r"<!-- nats-permissions: end -->", readme, flags=re.S)
    assert found, "README.md lost its nats-permissions block"
    assert found.group(1) == render_authorization(PLACEHOLDER_KEYS)


# -- credentials -----------------------------------------------------------------------------


def test_passwords_and_tokens_stay_out_of_reprs() -> None:
    creds = Credentials(user="bob", password="hunter2", token="t0ken")
    settings = load_settings(env={"WARDEN_NATS_PASSWORD": "hunter2",
                                  "WARDEN_NATS_TOKEN": "t0ken", "WARDEN_NATS_USER": "bob"})
    assert settings.nats.password == "hunter2" and settings.nats.token == "t0ken"
    for shown in (repr(creds), str(creds), repr(settings), repr(settings.nats),
                  Credentials.from_settings(settings.nats, "client").describe()):
        assert "hunter2" not in shown and "t0ken" not in shown
    assert "bob" in repr(settings.nats)


def test_each_nats_credential_key_maps_from_its_environment_variable() -> None:
    env = {f"WARDEN_NATS_{k.upper()}": f"/x/{k}" for k in
           ("creds", "nkey_seed", "user", "password", "token", "tls_ca", "tls_cert", "tls_key")}
    nats = load_settings(env=env).nats
    assert (nats.creds, nats.nkey_seed, nats.user, nats.tls_key) == (
        "/x/creds", "/x/nkey_seed", "/x/user", "/x/tls_key")


def test_connect_options_take_one_way_of_authenticating_in_order(tmp_path: Path) -> None:
    seeds = ensure_seeds(tmp_path)
    creds_file = tmp_path / "user.creds"
    creds_file.write_text("jwt and seed")
    both = Credentials(creds=creds_file, nkey_seed=seeds["client"], user="u", password="p",
                       inbox_prefix="_INBOX_client")
    assert both.connect_options() == {"user_credentials": str(creds_file),
                                      "inbox_prefix": "_INBOX_client"}
    assert Credentials.for_identity(tmp_path, "worker").connect_options() == {
        "nkeys_seed": str(seeds["worker"]), "inbox_prefix": "_INBOX_worker"}
    assert Credentials(token="t").connect_options() == {"token": "t"}
    assert Credentials().connect_options() == {}


@pytest.mark.parametrize("field", ["creds", "nkey_seed", "tls_ca"])
def test_a_missing_credential_file_is_one_error_naming_it(field: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / field
    with pytest.raises(CredentialsError, match=re.escape(str(missing))):
        Credentials(**{field: missing}).connect_options()  # type: ignore[arg-type]


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(CredentialsError, match="tls_cert and tls_key"):
        Credentials(tls_cert=cert).connect_options()


def test_warden_nats_permissions_prints_the_block_with_the_seeds_public_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from warden.supervisor.cli import build_parser

    def warden(*argv: str) -> int:
        # The command's function, not main(): main() configures logging for a process,
        # which would take the log capture from the tests that run after this one.
        args = build_parser().parse_args(argv)
        code: int = anyio.run(args.func, args)
        return code

    assert warden("nats-permissions") == 0
    assert capsys.readouterr().out == render_authorization(PLACEHOLDER_KEYS)
    assert warden("nats-permissions", "--keys", str(tmp_path / "keys")) == 0
    seeds = {i: tmp_path / "keys" / f"{i}.nk" for i in IDENTITIES}
    assert capsys.readouterr().out == render_authorization(
        {i: public_key(p) for i, p in seeds.items()})
    assert {i: _mode(p) for i, p in seeds.items()} == {i: 0o600 for i in IDENTITIES}
