import os
import subprocess
import sys

import pytest

from app.settings import SPECS, Settings, markdown_table
from tables.errors import ConfigError


def test_defaults_come_from_the_documented_table():
    s = Settings.from_env({})
    assert s.order_window_size_ms == 60_000
    assert s.max_out_of_orderness_ms == 10_000
    assert s.input_partitions == 8
    assert s.kafka_servers == "127.0.0.1:9092" and s.uses_local_broker


def test_every_setting_has_an_environment_variable_in_the_readme_table():
    table = markdown_table()
    for spec in SPECS.values():
        assert f"`{spec.env}`" in table


def test_existing_cluster_is_used_as_given():
    s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092"})
    assert not s.uses_local_broker
    assert s.faust_broker_url == "kafka://k1:9092;kafka://k2:9092"


@pytest.mark.parametrize(
    "env, value",
    [("WEIR_INPUT_PARTITIONS", "0"), ("WEIR_BROKER_PORT", "abc"),
     ("WEIR_PROCESSING_GUARANTEE", "maybe_once")],
)
def test_bad_value_fails_naming_the_variable(env, value):
    with pytest.raises(ConfigError, match=env):
        Settings.from_env({env: value})


@pytest.mark.parametrize(
    "env, value", [("WEIR_ORDER_WINDOW_SIZE_MS", "0"), ("WEIR_ORDER_WINDOW_SIZE_MS", "-5"),
                   ("WEIR_MAX_OUT_OF_ORDERNESS_MS", "-1")]
)
def test_worker_with_invalid_window_setting_fails_at_start_up(env, value, tmp_path):
    weir = os.path.join(os.path.dirname(sys.executable), "weir")
    proc = subprocess.run(
        [weir, "worker", "-l", "info"], env={**os.environ, env: value,
                                             "WEIR_DATA_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert env in proc.stderr
    assert "error" in proc.stderr


def test_hop_advance_beyond_hop_size_fails_naming_both_settings():
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"WEIR_PAGEVIEW_HOP_SIZE_MS": "60000",
                           "WEIR_PAGEVIEW_HOP_ADVANCE_MS": "120000"})
    assert "WEIR_PAGEVIEW_HOP_ADVANCE_MS" in str(err.value)
    assert "WEIR_PAGEVIEW_HOP_SIZE_MS" in str(err.value)


def test_zero_session_gap_fails_naming_the_setting():
    with pytest.raises(ConfigError, match="WEIR_SESSION_GAP_MS"):
        Settings.from_env({"WEIR_SESSION_GAP_MS": "0"})


def test_fraud_defaults_are_the_contract():
    s = Settings.from_env({})
    assert (s.fraud_large_amount, s.fraud_frequency_window_ms, s.fraud_frequency_max,
            s.fraud_max_speed_kmh, s.fraud_travel_window_ms, s.fraud_max_out_of_orderness_ms,
            s.fraud_dedup_ttl_ms) == (10_000.0, 60_000, 5, 900.0, 60_000, 5_000, 86_400_000)


@pytest.mark.parametrize("env, value", [
    ("WEIR_FRAUD_LARGE_AMOUNT", "nan"), ("WEIR_FRAUD_LARGE_AMOUNT", "-1"),
    ("WEIR_FRAUD_MAX_SPEED_KMH", "0"), ("WEIR_FRAUD_FREQUENCY_MAX", "0"),
    ("WEIR_FRAUD_FREQUENCY_WINDOW_MS", "x"), ("WEIR_FRAUD_DEDUP_TTL_MS", "0"),
    ("WEIR_FRAUD_STATE_TTL_MS", "59999"), ("WEIR_FRAUD_MAX_OUT_OF_ORDERNESS_MS", "-5"),
])
def test_bad_fraud_setting_fails_naming_the_variable(env, value):
    with pytest.raises(ConfigError, match=env):
        Settings.from_env({env: value})


def test_the_process_reads_its_settings_once(monkeypatch):
    import app.settings as settings_module

    monkeypatch.setattr(settings_module, "_of_process", None)
    monkeypatch.setenv("WEIR_FRAUD_LARGE_AMOUNT", "123")
    first = Settings.of_process()
    monkeypatch.setenv("WEIR_FRAUD_LARGE_AMOUNT", "456")
    assert Settings.of_process() is first and first.fraud_large_amount == 123
