"""Settings: defaults, file, environment; errors that name the key and the value."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from warden.config import ConfigError, ConfigFileError, ConfigVariableError, load_settings
from warden.config.loading import NOT_SETTINGS


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
        ({"WARDEN_MODELS__PROVIDER": "gemini"}, "models.provider", "gemini", "Invalid enum"),
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


# -- WARDEN_* environment variables -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("false", False), ("False", False), ("0", False), ("no", False), ("off", False),
     ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("on", True)],
)
def test_a_boolean_variable_is_read_as_a_boolean(text: str, expected: bool) -> None:
    assert load_settings(env={"WARDEN_LOCAL_WORKERS": text}).local_workers is expected


def test_a_boolean_variable_that_is_no_boolean_names_the_key_and_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"WARDEN_LOCAL_WORKERS": "maybe"})
    assert (caught.value.key, caught.value.value) == ("local_workers", "maybe")
    assert "WARDEN_LOCAL_WORKERS" in str(caught.value)


@pytest.mark.parametrize("name", ["WARDEN_LOCAL_WORKER", "WARDEN_NATS_PASWORD",
                                  "WARDEN_LIMITS__MAX_STEPZ", "WARDEN_ROLES_CODE_MODEL",
                                  "WARDEN_"])
def test_a_variable_that_sets_no_key_is_refused_by_name_without_its_value(name: str) -> None:
    with pytest.raises(ConfigVariableError) as caught:
        load_settings(env={name: "s3cret-value"})
    assert caught.value.key == name
    assert name in str(caught.value)
    assert "s3cret-value" not in str(caught.value)  # a mistyped name may hold a credential
    assert "\n" not in str(caught.value)


def test_a_refused_variable_suggests_the_one_it_resembles() -> None:
    with pytest.raises(ConfigVariableError, match="did you mean WARDEN_LOCAL_WORKERS"):
        load_settings(env={"WARDEN_LOCAL_WORKER": "false"})


def test_variables_that_are_not_settings_are_left_alone() -> None:
    env = {name: "x" for name in NOT_SETTINGS if name != "WARDEN_CONFIG"}
    assert {"WARDEN_CRASH_AT", "WARDEN_UNLOCKED"} <= set(env)
    assert load_settings(env=env).local_workers is True


def _scalar_keys() -> list[tuple[str, str]]:
    """Every (section, key) of a section whose value is a number, string or boolean."""
    keys = []
    for section, value in msgspec.structs.asdict(load_settings(env={})).items():
        if isinstance(value, msgspec.Struct):
            keys += [(section, key) for key, inner in msgspec.structs.asdict(value).items()
                     if isinstance(inner, bool | int | float | str)]
    return keys


def _spelled(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def test_every_key_of_every_section_is_set_by_both_of_its_variables() -> None:
    # Walks the settings, so a key added later (the bus's credentials) is covered too.
    keys = _scalar_keys()
    assert ("nats", "url") not in keys  # None by default: not walked, pinned elsewhere
    assert len(keys) > 30
    defaults = load_settings(env={})
    for section, key in keys:
        value = getattr(getattr(defaults, section), key)
        if isinstance(value, bool):
            changed: object = not value
        elif isinstance(value, int | float):
            changed = value + 1
        else:
            changed = f"{value}x"
        if (section, key) in {("models", "provider")}:
            changed = "scripted"
        for name in (f"WARDEN_{section.upper()}_{key.upper()}",
                     f"WARDEN_{section.upper()}__{key.upper()}"):
            try:
                loaded = load_settings(env={name: _spelled(changed)})
            except ConfigError as exc:  # a value the key refuses: still the right key
                assert exc.key == f"{section}.{key}", (name, exc)
                continue
            assert getattr(getattr(loaded, section), key) == changed, name


def test_lists_and_tables_are_given_as_json() -> None:
    settings = load_settings(env={"WARDEN_ROLES__CODE__TOOLS": '["echo", "read_file"]'})
    assert settings.roles["code"].tools == ["echo", "read_file"]
    with pytest.raises(ConfigError, match="JSON") as caught:
        load_settings(env={"WARDEN_ROLES__CODE__TOOLS": "echo"})
    assert caught.value.key == "roles.code.tools"


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_a_number_that_is_not_finite_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="finite") as caught:
        load_settings(env={"WARDEN_LIMITS_RUN_BUDGET_USD": text})
    assert caught.value.key == "limits.run_budget_usd"


def test_a_non_finite_number_in_a_file_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text("[pricing.models.claude-haiku-4-5]\ninput_per_mtok = nan\n"
                    "output_per_mtok = 1.0\n")
    with pytest.raises(ConfigError, match="finite") as caught:
        load_settings(str(path), env={})
    assert caught.value.key == "pricing.models.claude-haiku-4-5.input_per_mtok"


@pytest.mark.parametrize(("section", "entry", "key"), [
    ("roles", {"model": "claude-haiku-4-5", "tools": [], "prompt": "p", "modle": "x"},
     "roles.scout.modle"),
    ("tools", {"function": "m:f", "risk": "extreme"}, "tools.refund.risk"),
])
def test_an_error_in_a_keyed_section_names_the_entry(
    section: str, entry: dict[str, object], key: str,
) -> None:
    name = key.split(".")[1]
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, overrides={(section, name): entry})
    assert caught.value.key == key
