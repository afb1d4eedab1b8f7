import asyncio, json
from tests.integration import test_orders_pipeline as orders
from tests.integration import test_pageviews_pipeline as pageviews
from tests.integration.kafka_tools import Worker, produce, read_topic
from tests.integration.test_crashes import stream_slowly, split_flush

async def test_both(pipeline_env, tmp_path):
    env = {**pageviews.pageview_env(pipeline_env), "WEIR_CONSUMER_SESSION_TIMEOUT_MS": "6000"}
    servers = env["KAFKA_BOOTSTRAP_SERVERS"]
    order_body, order_flush = split_flush(orders.fixed_input(seed=31), b'"flush-')
    view_body, view_flush = split_flush(pageviews.fixed_input(seed=37), b'"flush-')
    worker = Worker(env, tmp_path / "worker-1.log").start()
    await asyncio.gather(
        stream_slowly(servers, env["WEIR_TOPIC_ORDERS"], order_body),
        stream_slowly(servers, env["WEIR_TOPIC_PAGEVIEWS"], view_body))
    await asyncio.sleep(5)
    worker.stop()
    print(open(tmp_path / "worker-1.log").read()[-3000:])
    print(tmp_path)
    from collections import Counter
    for t in ["pageview-sessions", "orders-totals-windows", "pageviews-tumbling-windows"]:
        recs = await read_topic(servers, f"{env['WEIR_APP_ID']}-{t}-changelog", 0, timeout_s=3, settle_s=0)
        print(t, Counter(r.partition for r in recs))
    recs = await read_topic(servers, env["WEIR_TOPIC_PAGEVIEWS"], 0, timeout_s=3, settle_s=0)
    print("input", Counter(r.partition for r in recs))
