"""The `weir` command: Faust's own CLI (`weir worker -l info`) plus Weir's commands.

    weir broker start|stop|status|wipe   the local Kafka broker (KRaft, 127.0.0.1)
    weir topics                          create the project's topics
    weir generate orders|pageviews|transactions ...   produce events with disorder and late events
    weir watch                           print window results, fraud alerts and late events as they come
    weir settings                        every setting as a Markdown table
"""

from __future__ import annotations

import faulthandler
import sys
from typing import Optional
from pathlib import Path

from tables.errors import WeirError


def _register_commands(app, conf) -> None:
    import asyncio

    import orjson
    from aiokafka import AIOKafkaConsumer
    from faust.cli import argument, option

    from app import broker as local_broker
    from app.generator import OrderStream, PageviewStream, TransactionStream, produce
    from app.kafka_auth import client_options
    from app.settings import changed_settings_table, markdown_table
    from app.topics import provision

    home = Path(conf.home)

    @app.command(argument("action", type=str, required=True))
    async def broker(self, action: str) -> None:
        """Start, stop, show or wipe the local broker (start|stop|status|wipe)."""
        if action == "start":
            if not conf.uses_local_broker:
                self.say(f"KAFKA_BOOTSTRAP_SERVERS={conf.bootstrap_servers}: using it, starting nothing")
                return
            local_broker.ensure_jars(home, progress=self.say)
            pid = local_broker.start(home, conf.broker_port, conf.broker_controller_port)
            self.say(f"broker running on 127.0.0.1:{conf.broker_port} (pid {pid})")
        elif action == "stop":
            self.say("stopped" if local_broker.stop(home) else "not running")
        elif action == "status":
            self.say(orjson.dumps(local_broker.status(home, conf.broker_port), default=str).decode())
        elif action == "wipe":
            local_broker.wipe(home)
            self.say(f"broker data under {home} removed")
        else:
            raise WeirError(f"unknown broker action {action!r}: use start, stop, status or wipe")

    @app.command()
    async def topics(self) -> None:
        """Create the project's topics (idempotent)."""
        created = await provision(conf)
        self.say(f"created: {', '.join(created) or 'nothing, all exist'}")

    @app.command(
        argument("kind", type=str, required=True),
        option("--rate", type=float, default=1000.0, help="events/s, 0 = as fast as possible"),
        option("--count", type=int, default=100_000, help="events to send"),
        option("--disorder-ms", type=int, default=5_000, help="max shift back in event time"),
        option("--late-fraction", type=float, default=0.01, help="share of late events"),
        option("--malformed-fraction", type=float, default=0.001, help="share of broken payloads"),
        option("--seed", type=int, default=1, help="random seed"),
        option("--start-ms", type=int, default=0, help="event time of the first event (0: now)"),
        option("--step-ms", type=int, default=0, help="event-time step per event (0: 1000/rate)"),
        option("--fraud-fraction", type=float, default=0.01,
               help="transactions: share of events that start a fraud pattern (burst, travel, large)"),
    )
    async def generate(self, kind: str, rate: float, count: int, disorder_ms: int,
                       late_fraction: float, malformed_fraction: float, seed: int,
                       start_ms: int, step_ms: int, fraud_fraction: float) -> None:
        """Produce generated events (kind: orders, pageviews or transactions)."""
        kinds = {"orders": (OrderStream, conf.orders_topic),
                 "pageviews": (PageviewStream, conf.pageviews_topic),
                 "transactions": (TransactionStream, conf.transactions_topic)}
        if kind not in kinds:
            raise WeirError(f"unknown kind {kind!r}: one of {', '.join(kinds)}")
        import time

        make, topic = kinds[kind]
        step = step_ms or (max(1, int(1000 / rate)) if rate > 0 else 10)
        extra = {"fraud_fraction": fraud_fraction} if kind == "transactions" else {}
        stream = make(count=count, seed=seed, start_ms=start_ms or int(time.time() * 1000),
                      step_ms=step, disorder_ms=disorder_ms, late_fraction=late_fraction,
                      malformed_fraction=malformed_fraction, **extra)
        await provision(conf)
        sent = await produce(conf.kafka_servers, topic, stream, rate=rate,
                             client_options=client_options(conf))
        self.say(f"sent {sent} {kind} to {topic}")

    @app.command(
        option("--events", type=int, default=1_000_000,
               help="orders to produce (weir-fraud: transactions; weir-pageviews: pageviews)"),
        option("--partitions", type=int, default=8, help="partitions of the input topic"),
        option("--subjects", type=str, default="weir,quix,ceiling",
               help="comma-separated: weir, quix, ceiling, weir-pageviews, weir-fraud, "
                    "weir-latency, weir-recovery"),
        option("--json", "json_path", type=str, default="bench-results.json",
               help="where to write the results ('' for nowhere)"),
        option("--latency-rate", type=float, default=10_000.0,
               help="weir-latency: orders/s offered"),
        option("--latency-seconds", type=float, default=30.0,
               help="weir-latency and weir-fraud's latency run: seconds of offered load"),
        option("--latency-window-ms", type=int, default=1_000,
               help="weir-latency: window size (WEIR_ORDER_WINDOW_SIZE_MS of the worker)"),
        option("--latency-out-of-orderness-ms", type=int, default=200,
               help="weir-latency: WEIR_MAX_OUT_OF_ORDERNESS_MS of the worker"),
        option("--fraud-latency-rate", type=float, default=5_000.0,
               help="weir-fraud: transactions/s offered in its latency run"),
        option("--recovery-keys", type=int, default=1_000_000,
               help="weir-recovery: keys in the table to restore"),
        option("--offered-tick-ms", type=int, default=5,
               help="latency runs: the load is sent every this many ms (and lingers as long)"),
    )
    async def bench(self, events: int, partitions: int, subjects: str, json_path: str,
                    latency_rate: float, latency_seconds: float, latency_window_ms: int,
                    latency_out_of_orderness_ms: int, fraud_latency_rate: float,
                    recovery_keys: int, offered_tick_ms: int) -> None:
        """Measure Weir's order windows against Quix Streams and a bare consume loop; also
        close latency, recovery and the fraud pipeline (see the README)."""
        from app import bench as benchmark

        if conf.uses_local_broker:
            local_broker.ensure_jars(home, progress=self.say)
            local_broker.start(home, conf.broker_port, conf.broker_controller_port)
        options = benchmark.Options(latency_rate, latency_seconds, latency_window_ms,
                                    latency_out_of_orderness_ms, fraud_latency_rate,
                                    recovery_keys, offered_tick_ms)
        await benchmark.run(conf.kafka_servers, events, partitions,
                            [s.strip() for s in subjects.split(",") if s.strip()],
                            Path(json_path) if json_path else None, say=self.say,
                            options=options)

    @app.command(
        option("--max-seconds", type=float, default=0.0, help="stop after this long (0: never)"),
        option("--min-session-pages", type=int, default=10,
               help="print only sessions with at least this many pages"),
    )
    async def watch(self, max_seconds: float, min_session_pages: int) -> None:
        """Print closed windows, sessions, fraud alerts, late events and dead letters as they arrive."""
        wanted = [conf.order_metrics_topic, conf.pageview_metrics_topic, conf.user_sessions_topic,
                  conf.fraud_alerts_topic, conf.late_events_topic, conf.dead_letters_topic]
        consumer = AIOKafkaConsumer(*wanted, bootstrap_servers=conf.kafka_servers,
                                    isolation_level="read_committed", auto_offset_reset="latest",
                                    **client_options(conf))
        await consumer.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_seconds if max_seconds else None
        try:
            while deadline is None or loop.time() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        line = describe(tp.topic, record.value, min_session_pages)
                        if line:
                            self.say(line)
        finally:
            await consumer.stop()

    def describe(topic: str, value: bytes, min_session_pages: int = 0) -> Optional[str]:
        """One readable line per output record."""
        try:
            rec = orjson.loads(value)
        except orjson.JSONDecodeError:
            return f"{topic}: {value[:200]!r}"
        if topic == conf.order_metrics_topic:
            return (f"window [{_clock(rec['windowStart'])}, {_clock(rec['windowEnd'])}) "
                    f"revision {rec['revision']}: {rec['totalOrders']} orders, "
                    f"revenue {rec['totalRevenue']:.2f}, avg {rec['avgOrderValue']:.2f}")
        if topic == conf.pageview_metrics_topic:
            top = ", ".join(f"{page} {n}" for page, n in rec["topPages"][:3])
            return (f"pageviews {rec['window']} [{_clock(rec['windowStart'])}, "
                    f"{_clock(rec['windowEnd'])}) revision {rec['revision']}: "
                    f"{rec['pageViews']} views, {rec['activeUsers']} active users; top: {top}")
        if topic == conf.user_sessions_topic:
            if not rec["retracted"] and rec["pageViews"] < min_session_pages:
                return None
            if rec["retracted"]:
                return f"  session {rec['sessionId']} from {_clock(rec['sessionStart'])} retracted"
            return (f"  session {rec['sessionId']}: {rec['pageViews']} pages in "
                    f"{rec['durationMs'] / 1000:.0f}s, {rec['entryPage']} -> {rec['exitPage']}")
        if topic == conf.fraud_alerts_topic:
            return f"  FRAUD {rec['type']} user {rec['userId']} at {_clock(rec['timestamp'])}: " + \
                _alert_details(rec)
        if topic == conf.late_events_topic and "eventTimestamp" not in rec:
            return (f"  late partial: partition {rec['sourcePartition']} window "
                    f"[{_clock(rec['windowStart'])}, {_clock(rec['windowEnd'])}) after the merge purged it")
        if topic == conf.late_events_topic and rec["pipeline"] == "fraud":
            return (f"  late: transaction at {_clock(rec['eventTimestamp'])}, "
                    f"{rec['lateByMs'] / 1000:.1f}s behind the watermark: left out of the ordered rules")
        if topic == conf.late_events_topic:
            return (f"  late: {rec['pipeline']} event at {_clock(rec['eventTimestamp'])} for window "
                    f"[{_clock(rec['windowStart'])}, {_clock(rec['windowEnd'])}), "
                    f"{rec['lateByMs'] / 1000:.1f}s behind the watermark")
        return (f"  dead letter: {rec['reason']} at {rec['sourceTopic']}/{rec['sourcePartition']}"
                f"@{rec['sourceOffset']}: {rec['error'][:120]}")

    @app.command()
    async def settings(self) -> None:
        """Print every setting: environment variable, default, meaning (then the values this
        environment changes, secrets masked)."""
        self.say(markdown_table())
        changed = changed_settings_table(conf)
        if changed:
            self.say("\n" + changed)


def _alert_details(rec: dict) -> str:
    """The rule's details of a fraud alert, in words."""
    if rec["type"] == "LARGE_AMOUNT":
        return f"amount {rec['amount']:.2f} > {rec['threshold']:.2f}"
    if rec["type"] == "HIGH_FREQUENCY":
        return f"{rec['count']} transactions in {rec['windowMs'] / 1000:.0f}s"
    speed = "" if rec["speedKmh"] is None else f", {rec['speedKmh']:.0f} km/h"
    distance = "" if rec["distanceKm"] is None else f" ({rec['distanceKm']:.0f} km{speed})"
    return (f"{rec['fromLocation']} -> {rec['toLocation']} in "
            f"{rec['timeApartMs'] / 1000:.1f}s{distance}")


def _clock(ms: int) -> str:
    """Epoch milliseconds as UTC wall time, e.g. 07:01:00.000."""
    import datetime

    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def main() -> None:
    """Console entry point; bad settings stop here with the setting's name."""
    # a crash in native code (RocksDB, the Kafka client's C parts) prints every thread's
    # Python stack to the log, not only a signal number in the exit status
    faulthandler.enable()
    try:
        from app import event_loop
        from app.settings import Settings

        event_loop.install(Settings.of_process().event_loop)  # before any loop exists
        from app.faust_app import app, settings
        from app import log_throttle
        from app.gc_tuning import tune

        _register_commands(app, settings)
        tune()
        log_throttle.install()
        app.main()
    except WeirError as exc:
        print(f"weir: error: {exc}", file=sys.stderr)
        sys.exit(2)
