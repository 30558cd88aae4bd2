"""Settings: defaults, file, environment; errors that name the key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest
from warden.config import ConfigError, ConfigFileError, load_settings


def test_shipped_defaults_load_and_price_every_model() -> None:
    settings = load_settings(env={})
    assert settings.data_dir == ".warden"
    assert set(settings.roles) == {"research", "code", "review"}
    for role in settings.roles.values():
        assert role.model in settings.pricing.models
    assert settings.models.planner in settings.pricing.models


def test_environment_overrides_file_which_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text("[limits]\nmax_turns_per_step = 3\nrun_budget_usd = 0.2\n")
    settings = load_settings(
        str(path),
        env={"WARDEN_LIMITS__RUN_BUDGET_USD": "0.05", "WARDEN_SCRIPTED_LATENCY_MS": "200",
             "WARDEN_DATA_DIR": "/tmp/x", "WARDEN_NATS_URL": "nats://h:1"},
    )
    assert settings.limits.max_turns_per_step == 3
    assert settings.limits.run_budget_usd == 0.05
    assert settings.models.scripted_latency_ms == 200.0
    assert settings.data_dir == "/tmp/x"
    assert settings.nats.url == "nats://h:1"
    assert settings.limits.max_steps_per_run == 8  # untouched default


@pytest.mark.parametrize(
    ("env", "key", "value", "problem"),
    [
        ({"WARDEN_LIMITS__MAX_STEPS_PER_RUN": "many"}, "limits.max_steps_per_run", "many",
         "Expected `int`"),
        ({"WARDEN_LIMITS__MAX_TURNS_PER_STEP": "0"}, "limits.max_turns_per_step", 0,
         "at least 1"),
        ({"WARDEN_LIMITS__RUN_BUDGET_USD": "-1"}, "limits.run_budget_usd", -1.0,
         "greater than 0"),
        ({"WARDEN_ROLES__CODE__MODEL": "gpt-9"}, "roles.code.model", "gpt-9",
         "no entry in pricing.models"),
        ({"WARDEN_MODELS__PLANNER": "mystery"}, "models.planner", "mystery",
         "no entry in pricing.models"),
        ({"WARDEN_MODELS__PROVIDER": "openai"}, "models.provider", "openai", "Invalid enum"),
        ({"WARDEN_NATS__PORT": "70000"}, "nats.port", 70000, "between 0 and 65535"),
    ],
)
def test_bad_setting_names_the_key_and_the_value(
    env: dict[str, str], key: str, value: object, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    assert caught.value.key == key
    assert caught.value.value == value
    assert problem in str(caught.value)
    assert repr(key) in str(caught.value)


def test_unknown_key_in_a_file_fails_loudly(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text("[breaker]\nfailure_treshold = 3\n")
    with pytest.raises(ConfigError, match=r"'breaker\.failure_treshold'.*unknown key"):
        load_settings(str(path), env={})


def test_missing_or_broken_file_is_a_config_file_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot be read"):
        load_settings(str(tmp_path / "absent.toml"), env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[limits\n")
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        load_settings(str(broken), env={})


def test_model_missing_from_the_price_table_is_an_error_not_a_zero_cost(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text('[roles.research]\nmodel = "claude-unpriced"\ntools = []\nprompt = "p"\n')
    with pytest.raises(ConfigError, match=r"'roles\.research\.model' = 'claude-unpriced'"):
        load_settings(str(path), env={})
