"""``[metrics]`` and ``[anomaly]``: defaults, env vars, and out-of-range values refused
naming the key."""

from __future__ import annotations

import pytest
from warden.config import ConfigError, load_settings


def test_metrics_and_anomaly_flags_are_on_by_default() -> None:
    settings = load_settings(env={})
    assert settings.metrics.enabled and settings.anomaly.enabled
    assert settings.anomaly.min_baseline_runs >= 1


def test_metrics_can_be_switched_off_by_env_var() -> None:
    settings = load_settings(env={"WARDEN_METRICS_ENABLED": "false",
                                  "WARDEN_ANOMALY_MAD_K": "3.5"})
    assert not settings.metrics.enabled
    assert settings.anomaly.mad_k == 3.5


@pytest.mark.parametrize(("key", "value"), [
    ("metrics.scrape_timeout_s", 0.0),
    ("anomaly.baseline_runs", 0),
    ("anomaly.min_baseline_runs", 0),
    ("anomaly.max_pattern_length", 1),
    ("anomaly.median_ratio", 0.5),
    ("anomaly.mad_k", -1.0),
    ("anomaly.repeat_threshold", -1),
])
def test_an_out_of_range_value_is_refused_naming_its_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(env={}, overrides={tuple(key.split(".")): value})
