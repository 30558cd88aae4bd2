"""``[[approvals.webhooks]]``: a bad webhook is one ConfigError naming its key, and no
credential (a URL's query or user, a secret, a URL read from the environment) is ever in
the message."""

from __future__ import annotations

import msgspec
import pytest
from warden.config import ConfigError, WebhookSettings, check_webhooks
from warden.config.webhooks import shown_url

ENV = {"HOOK_SECRET": "s3cr3t-value", "SLACK_URL": "https://hooks.slack.com/services/T1/B2/tok"}


def hook(**fields: object) -> WebhookSettings:
    return msgspec.convert({"url": "https://hooks.example.com/warden", **fields},
                           WebhookSettings)


def test_a_plain_url_and_one_from_the_environment_with_a_secret_are_accepted() -> None:
    check_webhooks([hook(secret_env="HOOK_SECRET"),
                    msgspec.convert({"url_env": "SLACK_URL"}, WebhookSettings)], ENV)


def test_no_webhooks_is_fine() -> None:
    check_webhooks([], {})


@pytest.mark.parametrize(("fields", "key", "problem"), [
    ({"url": "ftp://example.com/x"}, "url", "must be an http:// or https:// URL"),
    ({"url": "hooks.example.com/warden"}, "url", "must be an http:// or https:// URL"),
    ({"url": "https:///path"}, "url", "has no host"),
    ({"url": "https://example.com:99999/x"}, "url", "is not a URL"),
    ({"url": None}, "url", "set exactly one of url and url_env"),
    ({"url_env": "SLACK_URL"}, "url", "set exactly one of url and url_env"),
    ({"secret_env": "NOT_SET_ANYWHERE"}, "secret_env", "is not set"),
    ({"secret_env": "HOOK SECRET"}, "secret_env", "is not an environment variable name"),
    ({"secret_env": "WARDEN_HOOK_SECRET"}, "secret_env", "must not be a WARDEN_* variable"),
    ({"timeout_s": 0}, "timeout_s", "must be a number above 0"),
    ({"timeout_s": float("inf")}, "timeout_s", "must be a number above 0"),
    ({"retry_base_s": -1}, "retry_base_s", "must be a number above 0"),
    ({"retry_base_s": 5, "retry_max_s": 1}, "retry_max_s",
     "is below approvals.webhooks[1].retry_base_s = 5"),
    ({"retry_after_cap_s": -1}, "retry_after_cap_s", "must be a number >= 0"),
    ({"attempts": 0}, "attempts", "must be at least 1"),
])
def test_a_bad_webhook_is_one_config_error_naming_its_key(
    fields: dict[str, object], key: str, problem: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_webhooks([hook(), hook(**fields)], ENV)

    assert caught.value.key == f"approvals.webhooks[1].{key}"
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_unknown_key_is_refused_by_name() -> None:
    with pytest.raises(msgspec.ValidationError, match="secret"):
        hook(secret="inline")  # the secret itself never goes in the config


def test_a_url_holding_credentials_is_refused_without_saying_them() -> None:
    with pytest.raises(ConfigError) as caught:
        check_webhooks([hook(url="https://alice:pa55word@example.com/h?token=t0k")], ENV)

    assert caught.value.key == "approvals.webhooks[0].url"
    assert "must not hold a user or password" in str(caught.value)
    for secret in ("alice", "pa55word", "t0k"):
        assert secret not in str(caught.value)


def test_a_bad_url_from_the_environment_is_named_by_its_variable_not_its_value() -> None:
    with pytest.raises(ConfigError) as caught:
        check_webhooks([msgspec.convert({"url_env": "BAD_URL"}, WebhookSettings)],
                       {"BAD_URL": "ftp://secret-host/token123"})

    assert caught.value.key == "approvals.webhooks[0].url_env"
    assert "<the value of BAD_URL>" in str(caught.value)
    assert "token123" not in str(caught.value)


def test_a_missing_url_variable_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="is not set") as caught:
        check_webhooks([msgspec.convert({"url_env": "SLACK_URL"}, WebhookSettings)], {})
    assert caught.value.key == "approvals.webhooks[0].url_env"


@pytest.mark.parametrize(("url", "shown"), [
    ("https://example.com/hooks/w?token=abc#frag", "https://example.com/hooks/w"),
    ("https://u:p@example.com:8443/h", "https://example.com:8443/h"),
    ("http://example.com", "http://example.com"),
])
def test_a_url_is_shown_without_query_fragment_or_credentials(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_the_repr_of_a_webhook_hides_the_query_of_its_url() -> None:
    assert "abc" not in repr(hook(url="https://example.com/h?token=abc"))
