"""What `weir bench`'s recovery measurement reads: Faust's log stamps, the key gauge."""

import datetime

from agents.fraud_rules import FraudRules, load_user_state
from app.bench_recovery import log_time, metric_value, user_state

RULES = FraudRules()


def test_log_time_is_the_stamp_of_the_first_matching_line():
    text = ("[2026-11-30 16:05:19,374] [1] [INFO] [^---Recovery]: Starting... \n"
            "[2026-11-30 16:05:23,534] [1] [INFO] [^---Recovery]: Recovery complete \n"
            "[2026-11-30 16:05:29,000] [1] [INFO] [^---Recovery]: Recovery complete \n")
    done = log_time(text, r"Recovery complete")
    assert done == datetime.datetime(2026, 11, 30, 16, 5, 23, 534000).timestamp()
    assert round(done - log_time(text, r"Recovery\]: Starting"), 3) == 4.16
    assert log_time(text, r"Worker ready") is None


def test_metric_value_reads_one_labelled_sample():
    text = ('# HELP weir_table_keys Keys\nweir_table_keys{table="fraud-users"} 1e+06\n'
            'weir_table_keys{table="fraud-dedup"} 0.0\n')
    assert metric_value(text, "weir_table_keys", 'table="fraud-users"') == 1_000_000
    assert metric_value(text, "weir_table_keys", 'table="orders-seen"') is None


def test_user_state_has_the_ttl_envelope_of_the_fraud_rules_state():
    state = user_state(3, 1_000)
    value, touched = state
    loaded = load_user_state(value)
    assert loaded == (None, "r3-user-0000003", "Oslo", 1_000, 59.9139, 10.7522, 1_000)
    assert touched == 1_000 and RULES.evaluate(loaded, []) == (loaded, [])
