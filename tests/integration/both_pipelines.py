"""Orders, pageviews (and fraud) through one worker: input helpers, one exact check of all."""

from __future__ import annotations

import json

from tests.fraud_oracle import expected as fraud_expected
from tests.integration import test_fraud_pipeline as fraud
from tests.integration import test_orders_pipeline as orders
from tests.integration import test_pageviews_pipeline as pageviews
from tests.integration.kafka_tools import read_topic


def split_flush(messages, marker: bytes):
    flush = [m for m in messages if marker in m[2]]
    return [m for m in messages if marker not in m[2]], flush


async def read_both_pipelines(env, order_count: int, view_count: int, tx_count: int = 0):
    """Inputs and outputs of the pipelines (fraud too when ``tx_count``), read once the
    outputs equal the oracles (or time out); late events and dead letters share their topics."""
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    order_inputs = await read_topic(servers, env["WEIR_TOPIC_ORDERS"], order_count, settle_s=0)
    view_inputs = await read_topic(servers, env["WEIR_TOPIC_PAGEVIEWS"], view_count, settle_s=0)
    expected, order_dead = orders.oracle_for(order_inputs)
    views, view_dead = pageviews.decode_inputs(view_inputs)
    want_windows, want_sessions, want_late = pageviews.expected_all(views)
    fraud_part, fraud_late, fraud_dead = None, 0, 0
    if tx_count:
        tx_inputs = await read_topic(servers, env["WEIR_TOPIC_TRANSACTIONS"], tx_count,
                                     settle_s=0)
        txs, tx_dead = fraud.decode_inputs(tx_inputs)
        want_alerts, want_tx_late = fraud_expected(txs, fraud.thresholds(env))
        alerts = await read_topic(
            servers, env["WEIR_TOPIC_FRAUD_ALERTS"], len(want_alerts), timeout_s=120,
            settle_s=3.0,
            until=lambda recs: fraud.same_alerts(fraud.alerts_of(recs), want_alerts))
        fraud_part, fraud_late, fraud_dead = (txs, tx_dead, alerts), len(want_tx_late), len(tx_dead)
    metrics = await read_topic(
        servers, env["WEIR_TOPIC_ORDER_METRICS"], len(expected.merged()), timeout_s=120,
        settle_s=3.0, until=lambda recs: orders.summarize(recs, [], [])[0]
        == orders.expected_rows(expected)[0])
    view_outputs = await pageviews.read_outputs(
        env, want_windows, want_sessions, len(expected.late) + len(want_late) + fraud_late,
        len(order_dead) + len(view_dead) + fraud_dead, settle_s=3.0)
    return order_inputs, view_inputs, expected, order_dead, metrics, view_outputs, fraud_part


def assert_both_exact(outputs, env=None) -> None:
    """Every pipeline's outputs equal its oracle (fraud too when it was read, given ``env``)."""
    order_inputs, view_inputs, expected, order_dead, metrics, view_outputs, fraud_part = outputs
    page_metrics, sessions, late, dead = view_outputs
    by_pipeline = {"orders": ([], []), "pageviews": ([], []), "fraud": ([], [])}
    for records, slot in ((late, 0), (dead, 1)):
        for r in records:
            by_pipeline[json.loads(r.value)["pipeline"]][slot].append(r)
    orders.assert_exact(orders.summarize(metrics, *by_pipeline["orders"]), expected, order_dead,
                        order_inputs)
    pageviews.assert_exact((page_metrics, sessions, *by_pipeline["pageviews"]), view_inputs)
    if fraud_part is not None:
        txs, tx_dead, alerts = fraud_part
        fraud.assert_exact((alerts, *by_pipeline["fraud"]), txs, tx_dead, env)
    else:
        assert by_pipeline["fraud"] == ([], [])
