"""``[policy]`` settings: a bad pattern or a bad number is one ConfigError naming its key."""

from __future__ import annotations

import pytest
from warden.config import ConfigError, load_settings


def load(**policy: object) -> None:
    load_settings(env={}, overrides={("policy", k): v for k, v in policy.items()})


def test_the_shipped_policy_blocks_the_defaults_and_stops_loops_at_three() -> None:
    policy = load_settings(env={}).policy
    assert policy.default_patterns and policy.disabled_defaults == []
    assert policy.loop_threshold == 3 and policy.on_loop == "degraded"
    assert policy.max_side_effects_per_run == 0  # no run limit unless configured


def test_a_global_pattern_that_does_not_compile_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load(blocked_patterns=["ok", "rm (-rf"])
    assert caught.value.key == "policy.blocked_patterns[1]"
    assert str(caught.value).startswith(
        "config key 'policy.blocked_patterns[1]' = 'rm (-rf': is not a valid regular expression")
    assert "\n" not in str(caught.value)


def test_a_tools_pattern_that_does_not_compile_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load(tools={"refund": {"blocked_patterns": ["[unclosed"]}})
    assert caught.value.key == "policy.tools.refund.blocked_patterns[0]"


@pytest.mark.parametrize(("key", "value"), [
    ("loop_threshold", -1), ("loop_threshold", 1), ("max_side_effects_per_run", -2),
    ("max_files_written_per_run", -1), ("max_bytes_written_per_run", -1),
])
def test_a_limit_out_of_range_is_a_config_error(key: str, value: int) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**{key: value})
    assert caught.value.key == f"policy.{key}"


def test_a_lower_bound_above_the_upper_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load(tools={"refund": {"min": {"amount": 5}, "max": {"amount": 1}}})
    assert caught.value.key == "policy.tools.refund.min.amount"


def test_an_unknown_policy_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load(tools={"refund": {"maximum": {"amount": 5}}})
    # msgspec does not name a dict's key in its error path (roles.<name> alike): the
    # loader's key reads policy.tools.....maximum.
    assert caught.value.key.startswith("policy.tools.")
    assert caught.value.key.endswith(".maximum")
