"""Every Weir setting in one place: its environment variable, default and meaning.

`Settings.from_env()` reads them once at start-up; a bad value raises
`ConfigError` naming the variable, so a worker never starts half-configured.
`weir settings` prints this table as Markdown for the README.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional

if TYPE_CHECKING:
    from app.models import InputLimits  # app.models imports this module

from app.event_loop import LOOPS as EVENT_LOOPS
from tables.errors import ConfigError


@dataclass(frozen=True)
class Spec:
    env: str
    default: str
    parse: Callable[[str], Any]
    doc: str
    secret: bool = False  # never printed or logged: shown masked


def _int(low: Optional[int] = None, high: Optional[int] = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.strip())
        if low is not None and value < low:
            raise ValueError(f"must be >= {low}")
        if high is not None and value > high:
            raise ValueError(f"must be <= {high}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return text

    return parse


def _number(low: float, low_inclusive: bool = True) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text.strip())
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        if value < low or (value == low and not low_inclusive):
            raise ValueError(f"must be {'>=' if low_inclusive else '>'} {low:g}")
        return value

    return parse


def _text(text: str) -> str:
    return text.strip()


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value == "true"


def _existing_file(text: str) -> str:
    path = text.strip()
    if path and not os.path.isfile(path):
        raise ValueError(f"no such file: {path}")
    return path


MASK = "******"


SPECS: Dict[str, Spec] = {
    "bootstrap_servers": Spec(
        "KAFKA_BOOTSTRAP_SERVERS", "", _text,
        "Kafka bootstrap servers, comma separated. Empty: use the project's local "
        "broker on 127.0.0.1:WEIR_BROKER_PORT (started by `weir broker start`).",
    ),
    "broker_port": Spec("WEIR_BROKER_PORT", "9092", _int(1, 65535), "Port of the local broker."),
    "broker_controller_port": Spec(
        "WEIR_BROKER_CONTROLLER_PORT", "9093", _int(1, 65535),
        "KRaft controller port of the local broker.",
    ),
    "home": Spec(
        "WEIR_HOME", ".weir", _text,
        "Folder for the local broker's jars, data and logs.",
    ),
    "data_dir": Spec(
        "WEIR_DATA_DIR", ".weir/worker", _text,
        "Worker data dir: RocksDB state of its tables (recoverable from changelogs).",
    ),
    "app_id": Spec(
        "WEIR_APP_ID", "weir", _text,
        "Faust app id: consumer group, and prefix of changelog topics.",
    ),
    "input_partitions": Spec(
        "WEIR_INPUT_PARTITIONS", "8", _int(1),
        "Partitions of input, output and changelog topics the project creates.",
    ),
    "replication_factor": Spec(
        "WEIR_REPLICATION_FACTOR", "1", _int(1),
        "Replication factor of the topics the project creates.",
    ),
    "orders_topic": Spec("WEIR_TOPIC_ORDERS", "orders", _text, "Input topic of orders."),
    "order_metrics_topic": Spec(
        "WEIR_TOPIC_ORDER_METRICS", "order-metrics", _text,
        "Output topic: one record per closed order window.",
    ),
    "pageviews_topic": Spec(
        "WEIR_TOPIC_PAGEVIEWS", "pageviews", _text,
        "Input topic of pageviews; producers key them by sessionId.",
    ),
    "pageview_metrics_topic": Spec(
        "WEIR_TOPIC_PAGEVIEW_METRICS", "pageview-metrics", _text,
        "Output topic: one record per closed pageview window (tumbling and hopping).",
    ),
    "user_sessions_topic": Spec(
        "WEIR_TOPIC_USER_SESSIONS", "user-sessions", _text,
        "Output topic: one summary per closed user session.",
    ),
    "late_events_topic": Spec(
        "WEIR_TOPIC_LATE_EVENTS", "late-events", _text,
        "Side output: events that arrived after their window closed.",
    ),
    "dead_letters_topic": Spec(
        "WEIR_TOPIC_DEAD_LETTERS", "dead-letters", _text,
        "Side output: malformed input with the reason.",
    ),
    "transactions_topic": Spec(
        "WEIR_TOPIC_TRANSACTIONS", "transactions", _text,
        "Input topic of payment transactions; producers key them by userId.",
    ),
    "fraud_alerts_topic": Spec(
        "WEIR_TOPIC_FRAUD_ALERTS", "fraud-alerts", _text,
        "Output topic: fraud alerts (LARGE_AMOUNT, HIGH_FREQUENCY, IMPOSSIBLE_TRAVEL), keyed by userId.",
    ),
    "order_window_size_ms": Spec(
        "WEIR_ORDER_WINDOW_SIZE_MS", "60000", _int(1),
        "Size of the tumbling order windows, in milliseconds (> 0).",
    ),
    "pageview_window_size_ms": Spec(
        "WEIR_PAGEVIEW_WINDOW_SIZE_MS", "60000", _int(1),
        "Size of the tumbling pageview windows, ms.",
    ),
    "pageview_hop_size_ms": Spec(
        "WEIR_PAGEVIEW_HOP_SIZE_MS", "300000", _int(1),
        "Size of the hopping pageview windows, ms.",
    ),
    "pageview_hop_advance_ms": Spec(
        "WEIR_PAGEVIEW_HOP_ADVANCE_MS", "60000", _int(1),
        "Advance (slide) of the hopping pageview windows, ms; at most their size.",
    ),
    "session_gap_ms": Spec(
        "WEIR_SESSION_GAP_MS", "1800000", _int(1),
        "Inactivity gap that closes a user session, ms (events exactly this far apart "
        "are in different sessions).",
    ),
    "top_pages": Spec("WEIR_TOP_PAGES", "10", _int(1), "Pages listed per pageview window."),
    "top_referrers": Spec(
        "WEIR_TOP_REFERRERS", "5", _int(1), "Referrers listed per pageview window."),
    "max_out_of_orderness_ms": Spec(
        "WEIR_MAX_OUT_OF_ORDERNESS_MS", "10000", _int(0),
        "Watermark delay: highest event time seen on a partition minus this (>= 0 ms).",
    ),
    "allowed_lateness_ms": Spec(
        "WEIR_ALLOWED_LATENESS_MS", "0", _int(0),
        "How long after a window fired late events still update it (re-emitted with the next "
        "revision); later ones go to late-events. 0: none.",
    ),
    "max_future_skew_ms": Spec(
        "WEIR_MAX_FUTURE_SKEW_MS", "300000", _int(0),
        "Events more than this ahead of the worker's wall clock go to dead-letters "
        "(reason future_timestamp) instead of moving the watermark.",
    ),
    "max_event_bytes": Spec(
        "WEIR_MAX_EVENT_BYTES", "16384", _int(64),
        "Input events larger than this go to dead-letters (reason too_large), so no output "
        "derived from one can outgrow the broker's message size. Dead letters keep at most "
        "this many bytes of the raw input (rawTruncated says so).",
    ),
    "min_event_time_ms": Spec(
        "WEIR_MIN_EVENT_TIME_MS", "946684800000", _int(0),
        "Events with an earlier timestamp (default: 2000-01-01) go to dead-letters (reason "
        "past_timestamp) instead of opening windows at the epoch.",
    ),
    "max_amount": Spec(
        "WEIR_MAX_AMOUNT", "1000000000", _int(1),
        "Amounts above this go to dead-letters (reason invalid_value), so one absurd value "
        "cannot swamp a window's revenue.",
    ),
    "dedup_ttl_ms": Spec(
        "WEIR_DEDUP_TTL_MS", "300000", _int(0),
        "How long (event time) an event id is remembered, so that an upstream re-delivery of "
        "the same id counts once (orders: orderId; pageviews: sessionId+timestamp+page). "
        "0: no deduplication.",
    ),
    "idle_timeout_ms": Spec(
        "WEIR_IDLE_TIMEOUT_MS", "30000", _int(1),
        "A source partition silent this long (wall clock) stops holding back merged "
        "results, and (with WEIR_IDLE_ADVANCE) its event time starts following the wall clock.",
    ),
    "idle_advance": Spec(
        "WEIR_IDLE_ADVANCE", "true", _choice("true", "false"),
        "Let an idle partition's watermark advance with the wall clock, so the last windows "
        "of a burst close (turn off for strict replays).",
    ),
    "batch_path": Spec(
        "WEIR_BATCH_PATH", "direct", _choice("direct", "faust"),
        "How input reaches the pipelines: direct (each fetched partition batch at once, "
        "bypassing Faust's per-message streams) or faust (Faust's agents and take_events).",
    ),
    "fraud_repartition": Spec(
        "WEIR_FRAUD_REPARTITION", "false", _choice("true", "false"),
        "true: every transaction is re-keyed by userId through the internal topic "
        "<app id>-fraud-by-user before the rules (for producers that key by something else); "
        "false: the rules read the input directly (producers must key by userId).",
    ),
    "fraud_max_out_of_orderness_ms": Spec(
        "WEIR_FRAUD_MAX_OUT_OF_ORDERNESS_MS", "5000", _int(0),
        "Fraud watermark delay: highest transaction time seen on a partition minus this (ms); "
        "transactions behind it are late, the others are evaluated in event-time order once "
        "it passes them.",
    ),
    "fraud_large_amount": Spec(
        "WEIR_FRAUD_LARGE_AMOUNT", "10000", _number(0),
        "LARGE_AMOUNT alert for a transaction whose amount is above this (exactly this: no alert).",
    ),
    "fraud_frequency_window_ms": Spec(
        "WEIR_FRAUD_FREQUENCY_WINDOW_MS", "60000", _int(1),
        "HIGH_FREQUENCY: transactions of a user counted in (t - this, t], ms; also how long "
        "an alert suppresses the next one.",
    ),
    "fraud_frequency_max": Spec(
        "WEIR_FRAUD_FREQUENCY_MAX", "5", _int(1),
        "HIGH_FREQUENCY alert when a user has more than this many transactions in the window.",
    ),
    "fraud_max_speed_kmh": Spec(
        "WEIR_FRAUD_MAX_SPEED_KMH", "900", _number(0, low_inclusive=False),
        "IMPOSSIBLE_TRAVEL with coordinates: alert when the speed implied by two consecutive "
        "transactions is above this, km/h.",
    ),
    "fraud_travel_window_ms": Spec(
        "WEIR_FRAUD_TRAVEL_WINDOW_MS", "60000", _int(1),
        "IMPOSSIBLE_TRAVEL without coordinates: alert when consecutive transactions in "
        "different locations are less than this apart, ms.",
    ),
    "fraud_dedup_ttl_ms": Spec(
        "WEIR_FRAUD_DEDUP_TTL_MS", "86400000", _int(1),
        "How long (event time, ms, at least; ids are kept in 1 s buckets) a transactionId is remembered, so a re-delivery counts once.",
    ),
    "fraud_state_ttl_ms": Spec(
        "WEIR_FRAUD_STATE_TTL_MS", "86400000", _int(1),
        "Per-user fraud state (recent times, previous transaction) is dropped this long (event "
        "time, ms) after the user's last transaction; at least both fraud windows.",
    ),
    "batch_max_events": Spec(
        "WEIR_BATCH_MAX_EVENTS", "5000", _int(1),
        "Most events an agent takes in one batch.",
    ),
    "batch_max_wait_ms": Spec(
        "WEIR_BATCH_MAX_WAIT_MS", "200", _int(1),
        "Longest an agent on Faust's delivery (WEIR_BATCH_PATH=faust, the fraud repartition "
        "stage) waits to fill a batch before processing what it has; the direct path takes "
        "what each fetch brings.",
    ),
    "batch_concurrency": Spec(
        "WEIR_BATCH_CONCURRENCY", "8", _int(1, 1024),
        "Most partition batches (each its own transaction) a worker handles at the same time; "
        "1: one partition after the other.",
    ),
    "fetch_follow_up_ms": Spec(
        "WEIR_FETCH_FOLLOW_UP_MS", "3", _int(0, 1000),
        "On the direct batch path, after a fetch returned records, wait this long for the "
        "fetch that follows it and handle both in one round (the Kafka client fetches a "
        "partition again only once its buffered records are taken); 0: off.",
    ),
    "bulk_restore": Spec(
        "WEIR_BULK_RESTORE", "true", _choice("true", "false"),
        "Restore tables from their changelogs in large fetches and write batches before "
        "Faust's record-by-record recovery (app/bulk_restore.py); false: Faust's alone.",
    ),
    "fetch_max_wait_ms": Spec(
        "WEIR_FETCH_MAX_WAIT_MS", "100", _int(0, 60000),
        "Longest the broker holds a fetch that has no new records (Faust hard-codes 1500: a "
        "fetch of idle partitions then delays the next records of busy ones that long).",
    ),
    "txn_retry_backoff_ms": Spec(
        "WEIR_TXN_RETRY_BACKOFF_MS", "5", _int(1, 1000),
        "Wait before a transactional producer asks again to add partitions or consumed offsets "
        "to its next transaction while the broker still writes the previous commit's markers "
        "(aiokafka waits 20 ms and 100 ms).",
    ),
    "event_loop": Spec(
        "WEIR_EVENT_LOOP", "uvloop", _choice(*EVENT_LOOPS),
        "Event loop of the `weir` command's processes: uvloop (about 9% less CPU per "
        "transaction on the fraud worker) or asyncio's own.",
    ),
    "processing_guarantee": Spec(
        "WEIR_PROCESSING_GUARANTEE", "exactly_once", _choice("exactly_once", "at_least_once"),
        "Faust processing guarantee.",
    ),
    "commit_interval_ms": Spec(
        "WEIR_COMMIT_INTERVAL_MS", "50", _int(1),
        "How often consumed offsets are committed. Under exactly_once a source partition's "
        "transaction takes its batches until this much time has passed since it began, then "
        "commits (results become visible to read_committed consumers); a batch that feeds "
        "another stage (partials, repartition topics), emits a window's merged result or "
        "raises a fraud alert commits at once. 1: every batch.",
    ),
    "offsets_commit_interval_ms": Spec(
        "WEIR_OFFSETS_COMMIT_INTERVAL_MS", "1000", _int(1),
        "Under exactly_once, the consumed offsets go with a source partition's transaction at "
        "most this often (and before a rebalance, and at stop); the transactions in between "
        "commit without them, two requests fewer. Each pipeline's state carries the next offset "
        "it processes, so records read again after older offsets are skipped, not processed "
        "twice. Not above WEIR_COMMIT_INTERVAL_MS: every transaction carries them.",
    ),
    "consumer_session_timeout_ms": Spec(
        "WEIR_CONSUMER_SESSION_TIMEOUT_MS", "45000", _int(6000),
        "A worker that sends no heartbeat this long (crashed, hung) loses its partitions to "
        "the others (>= the broker's group.min.session.timeout.ms, 6000 by default).",
    ),
    "web_host": Spec("WEIR_WEB_HOST", "127.0.0.1", _text, "Interface of the worker's web server."),
    "web_port": Spec("WEIR_WEB_PORT", "6066", _int(1, 65535), "Port of the worker's web server."),
    "web_tables_enabled": Spec(
        "WEIR_WEB_TABLES_ENABLED", "false", _choice("true", "false"),
        "Expose Faust's raw /table/ routes (off: they dump state).",
    ),
    "metrics_interval_ms": Spec(
        "WEIR_METRICS_INTERVAL_MS", "2000", _int(100),
        "How often a worker samples consumer lag (log end minus the next offset to "
        "process), table keys and state size for /metrics, ms (>= 100).",
    ),
    "kafka_security_protocol": Spec(
        "WEIR_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT",
        _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        "Security protocol of every Kafka client of the worker and the CLI: PLAINTEXT, SSL, "
        "SASL_PLAINTEXT or SASL_SSL.",
    ),
    "kafka_sasl_mechanism": Spec(
        "WEIR_KAFKA_SASL_MECHANISM", "PLAIN", _choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        "SASL mechanism (with a SASL_* protocol): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.",
    ),
    "kafka_sasl_username": Spec(
        "WEIR_KAFKA_SASL_USERNAME", "", _text,
        "SASL user name (required with a SASL_* protocol).",
    ),
    "kafka_sasl_password": Spec(
        "WEIR_KAFKA_SASL_PASSWORD", "", lambda text: text,
        "SASL password (required with a SASL_* protocol); never printed or logged.",
        secret=True,
    ),
    "kafka_ssl_cafile": Spec(
        "WEIR_KAFKA_SSL_CAFILE", "", _existing_file,
        "PEM file of the CA that signed the brokers' certificates (SSL, SASL_SSL); "
        "empty: the system's trusted CAs.",
    ),
    "kafka_ssl_certfile": Spec(
        "WEIR_KAFKA_SSL_CERTFILE", "", _existing_file,
        "PEM client certificate for mutual TLS (SSL, SASL_SSL); empty: none.",
    ),
    "kafka_ssl_keyfile": Spec(
        "WEIR_KAFKA_SSL_KEYFILE", "", _existing_file,
        "PEM private key of WEIR_KAFKA_SSL_CERTFILE; empty: the key is in the certificate file.",
    ),
    "kafka_ssl_check_hostname": Spec(
        "WEIR_KAFKA_SSL_CHECK_HOSTNAME", "true", _bool,
        "Check that the broker's certificate names its host (SSL, SASL_SSL).",
    ),
    "dashboard_enabled": Spec(
        "WEIR_DASHBOARD_ENABLED", "true", _choice("true", "false"),
        "Serve the live dashboard at /dashboard on the worker's web server (it reads the "
        "output topics with its own consumer).",
    ),
    "dashboard_history_ms": Spec(
        "WEIR_DASHBOARD_HISTORY_MS", "3600000", _int(60_000),
        "History the dashboard keeps and shows, ms (>= 60000): windows of the last this "
        "much event time, late events, dead letters and fraud alerts of the last this much "
        "wall-clock time.",
    ),
    "dashboard_push_interval_ms": Spec(
        "WEIR_DASHBOARD_PUSH_INTERVAL_MS", "1000", _int(100, 60_000),
        "How often the dashboard pushes changes to open pages, ms (100..60000).",
    ),
    "dashboard_lag_interval_ms": Spec(
        "WEIR_DASHBOARD_LAG_INTERVAL_MS", "5000", _int(500),
        "How often the dashboard asks the broker for the consumer lag of the input topics, "
        "ms (>= 500).",
    ),
}


_of_process: Optional["Settings"] = None  # `Settings.of_process`

@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str
    broker_port: int
    broker_controller_port: int
    home: str
    data_dir: str
    app_id: str
    input_partitions: int
    replication_factor: int
    orders_topic: str
    order_metrics_topic: str
    pageviews_topic: str
    pageview_metrics_topic: str
    user_sessions_topic: str
    transactions_topic: str
    fraud_alerts_topic: str
    late_events_topic: str
    dead_letters_topic: str
    order_window_size_ms: int
    pageview_window_size_ms: int
    pageview_hop_size_ms: int
    pageview_hop_advance_ms: int
    session_gap_ms: int
    top_pages: int
    top_referrers: int
    max_out_of_orderness_ms: int
    allowed_lateness_ms: int
    max_future_skew_ms: int
    dedup_ttl_ms: int
    max_event_bytes: int
    min_event_time_ms: int
    max_amount: int
    idle_timeout_ms: int
    idle_advance: str
    batch_path: str
    fraud_repartition: str
    fraud_max_out_of_orderness_ms: int
    fraud_large_amount: float
    fraud_frequency_window_ms: int
    fraud_frequency_max: int
    fraud_max_speed_kmh: float
    fraud_travel_window_ms: int
    fraud_dedup_ttl_ms: int
    fraud_state_ttl_ms: int
    batch_max_events: int
    batch_max_wait_ms: int
    batch_concurrency: int
    fetch_follow_up_ms: int
    processing_guarantee: str
    commit_interval_ms: int
    offsets_commit_interval_ms: int
    fetch_max_wait_ms: int
    txn_retry_backoff_ms: int
    event_loop: str
    bulk_restore: str
    consumer_session_timeout_ms: int
    web_host: str
    web_port: int
    web_tables_enabled: str
    metrics_interval_ms: int
    kafka_security_protocol: str
    kafka_sasl_mechanism: str
    kafka_sasl_username: str
    kafka_sasl_password: str = field(repr=False)
    kafka_ssl_cafile: str
    kafka_ssl_certfile: str
    kafka_ssl_keyfile: str
    kafka_ssl_check_hostname: bool
    dashboard_enabled: str
    dashboard_history_ms: int
    dashboard_push_interval_ms: int
    dashboard_lag_interval_ms: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        values = {}
        for name, spec in SPECS.items():
            text = environ.get(spec.env, spec.default)
            try:
                values[name] = spec.parse(text)
            except ValueError as exc:
                shown = MASK if spec.secret else repr(text)
                raise ConfigError(f"{spec.env}={shown} is invalid: {exc}") from None
        if values["pageview_hop_advance_ms"] > values["pageview_hop_size_ms"]:
            raise ConfigError(
                f"WEIR_PAGEVIEW_HOP_ADVANCE_MS={values['pageview_hop_advance_ms']} must not "
                f"exceed WEIR_PAGEVIEW_HOP_SIZE_MS={values['pageview_hop_size_ms']}")
        _check_kafka_security(values)
        longest = max(values["fraud_frequency_window_ms"], values["fraud_travel_window_ms"])
        if values["fraud_state_ttl_ms"] < longest:
            raise ConfigError(
                f"WEIR_FRAUD_STATE_TTL_MS={values['fraud_state_ttl_ms']} must be at least the "
                f"longest fraud window ({longest} ms)")
        return cls(**values)

    @classmethod
    def of_process(cls) -> "Settings":
        """The process's settings: read from its environment by the first call, then kept
        (the ``weir`` command reads them before the app exists, the app module after)."""
        global _of_process
        if _of_process is None:
            _of_process = cls.from_env()
        return _of_process

    @property
    def uses_local_broker(self) -> bool:
        return not self.bootstrap_servers

    @property
    def kafka_servers(self) -> str:
        """Bootstrap servers as aiokafka takes them (comma separated)."""
        return self.bootstrap_servers or f"127.0.0.1:{self.broker_port}"

    @property
    def input_limits(self) -> "InputLimits":
        from app.models import InputLimits

        return InputLimits(self.max_event_bytes, self.min_event_time_ms, self.max_amount)

    def topic_name(self, internal: str) -> str:
        """Name of an internal topic of this app (not meant for other consumers)."""
        return f"{self.app_id}-{internal}"

    @property
    def faust_broker_url(self) -> str:
        return ";".join(f"kafka://{s.strip()}" for s in self.kafka_servers.split(","))


def _check_kafka_security(values: Dict[str, Any]) -> None:
    protocol = values["kafka_security_protocol"]
    if protocol.startswith("SASL_"):
        for name in ("kafka_sasl_username", "kafka_sasl_password"):
            if not values[name]:
                raise ConfigError(f"{SPECS[name].env} is required with "
                                  f"WEIR_KAFKA_SECURITY_PROTOCOL={protocol}")
    if values["kafka_ssl_keyfile"] and not values["kafka_ssl_certfile"]:
        raise ConfigError("WEIR_KAFKA_SSL_KEYFILE is set but WEIR_KAFKA_SSL_CERTFILE is not")


def shown_value(name: str, value: Any) -> str:
    """A setting's value as it may be printed: secrets masked."""
    if SPECS[name].secret and value:
        return MASK
    return str(value).lower() if isinstance(value, bool) else str(value)


def changed_settings_table(settings: "Settings") -> str:
    """The settings whose value differs from the default, as Markdown; secrets masked."""
    rows = []
    for f in fields(Settings):
        spec = SPECS[f.name]
        value = getattr(settings, f.name)
        if value != spec.parse(spec.default):
            rows.append(f"| `{spec.env}` | {shown_value(f.name, value)} |")
    if not rows:
        return ""
    return "\n".join(["| Variable | Value in this environment |", "|---|---|", *rows])


def markdown_table() -> str:
    """The settings as a Markdown table: variable, default, meaning."""
    names = [f.name for f in fields(Settings)]
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name in names:
        spec = SPECS[name]
        default = f"`{spec.default}`" if spec.default else "(empty)"
        rows.append(f"| `{spec.env}` | {default} | {spec.doc} |")
    return "\n".join(rows)
