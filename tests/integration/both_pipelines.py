"""Orders and pageviews through one worker: input helpers, and one exact check of both."""

from __future__ import annotations

import asyncio

from tests.integration import test_orders_pipeline as orders
from tests.integration import test_pageviews_pipeline as pageviews
from tests.integration.kafka_tools import produce, read_topic, stream_slowly  # noqa: F401 (re-exported)


def split_flush(messages, marker: bytes):
    flush = [m for m in messages if marker in m[2]]
    return [m for m in messages if marker not in m[2]], flush


async def read_both_pipelines(env, order_count: int, view_count: int):
    """Inputs and outputs of both pipelines, read once the outputs equal the oracles (or time
    out); late events and dead letters of both pipelines share their topics."""
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    order_inputs = await read_topic(servers, env["WEIR_TOPIC_ORDERS"], order_count, settle_s=0)
    view_inputs = await read_topic(servers, env["WEIR_TOPIC_PAGEVIEWS"], view_count, settle_s=0)
    expected, order_dead = orders.oracle_for(order_inputs)
    views, view_dead = pageviews.decode_inputs(view_inputs)
    want_windows, want_sessions, want_late = pageviews.expected_all(views)
    metrics = await read_topic(
        servers, env["WEIR_TOPIC_ORDER_METRICS"], len(expected.merged()), timeout_s=120,
        settle_s=3.0, until=lambda recs: orders.summarize(recs, [], [])[0]
        == orders.expected_rows(expected)[0])
    view_outputs = await pageviews.read_outputs(
        env, want_windows, want_sessions, len(expected.late) + len(want_late),
        len(order_dead) + len(view_dead), settle_s=3.0)
    return order_inputs, view_inputs, expected, order_dead, metrics, view_outputs


def assert_both_exact(outputs) -> None:
    order_inputs, view_inputs, expected, order_dead, metrics, view_outputs = outputs
    page_metrics, sessions, late, dead = view_outputs
    by_pipeline = {"orders": ([], []), "pageviews": ([], [])}
    for records, slot in ((late, 0), (dead, 1)):
        for r in records:
            pipeline = b'"pipeline":"orders"' in r.value and "orders" or "pageviews"
            by_pipeline[pipeline][slot].append(r)
    orders.assert_exact(orders.summarize(metrics, *by_pipeline["orders"]), expected, order_dead,
                        order_inputs)
    pageviews.assert_exact((page_metrics, sessions, *by_pipeline["pageviews"]), view_inputs)
