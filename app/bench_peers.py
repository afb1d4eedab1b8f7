"""The peers `weir bench` measures Weir against, each run as its own process.

    python -m app.bench_peers quix    SERVERS INPUT OUTPUT GROUP WINDOW_MS GRACE_MS STATE_DIR
    python -m app.bench_peers ceiling SERVERS INPUT EVENTS

``quix``: the same tumbling count/sum/avg with Quix Streams (``quixstreams``, a
benchmark-only extra), exactly-once, windows emitted once with ``.final()``.
Quix aggregates per message key; the bench keys each partition's orders with
one key, so its windows are per partition (Weir also merges them globally).
``ceiling``: a bare aiokafka ``getmany`` loop that decodes each order with
orjson and adds it to a dict of windows: no state store, no transactions, no
output; it prints the seconds from its first record to its last.
"""

from __future__ import annotations

import asyncio
import sys
import time


def run_quix(servers: str, input_topic: str, output_topic: str, group: str,
             window_ms: int, grace_ms: int, state_dir: str) -> None:
    from quixstreams import Application
    from quixstreams.dataframe.windows import aggregations as agg

    app = Application(broker_address=servers, consumer_group=group,
                      auto_offset_reset="earliest", processing_guarantee="exactly-once",
                      state_dir=state_dir, loglevel="INFO")
    source = app.topic(input_topic, value_deserializer="json",
                       timestamp_extractor=lambda value, headers, ts, kind: value["timestamp"])
    sink = app.topic(output_topic, value_serializer="json")
    sdf = app.dataframe(source)
    sdf = (sdf.tumbling_window(duration_ms=window_ms, grace_ms=grace_ms)
           .agg(count=agg.Count(), total=agg.Sum("amount")).final())
    sdf = sdf.apply(lambda w: {"windowStart": w["start"], "windowEnd": w["end"],
                               "totalOrders": w["count"], "totalRevenue": w["total"],
                               "avgOrderValue": w["total"] / w["count"]})
    sdf.to_topic(sink)
    print("quix: consuming", flush=True)
    app.run()


async def run_ceiling(servers: str, input_topic: str, events: int) -> None:
    import orjson
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(input_topic, bootstrap_servers=servers,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=4 * 2**20, fetch_max_bytes=64 * 2**20)
    await consumer.start()
    windows: dict = {}
    seen, first = 0, None
    try:
        while seen < events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            if first is None and batches:
                first = time.perf_counter()
            for records in batches.values():
                for record in records:
                    order = orjson.loads(record.value)
                    start = order["timestamp"] - order["timestamp"] % 60_000
                    acc = windows.get(start)
                    if acc is None:
                        windows[start] = [1, order["amount"]]
                    else:
                        acc[0] += 1
                        acc[1] += order["amount"]
                seen += len(records)
    finally:
        await consumer.stop()
    print(f"ceiling: {seen} events in {time.perf_counter() - first:.3f} s", flush=True)


if __name__ == "__main__":
    kind, args = sys.argv[1], sys.argv[2:]
    if kind == "quix":
        run_quix(args[0], args[1], args[2], args[3], int(args[4]), int(args[5]), args[6])
    elif kind == "ceiling":
        asyncio.run(run_ceiling(args[0], args[1], int(args[2])))
    else:
        raise SystemExit(f"unknown peer {kind!r}: quix or ceiling")
