"""Weir's Prometheus metrics: their names, labels and the helpers that count them.

Names follow Prometheus conventions: base units (seconds, bytes), counters
end in ``_total``, labels carry the pipeline, topic, partition, view, reason
or type. Everything about events is counted once per offset that a batch
processed *and committed* (the increments run after the batch's transaction,
`app.sinks.Sender.after_commit`), so a batch that aborts or is read again
after a hole counts nothing twice, and the sums over all workers equal what
the input topics hold.

Gauges about partitions (consumer lag, watermarks, event-time lag,
ownership) are kept only for partitions this worker holds now: they are
removed when a partition leaves (Faust's own sensor clears gauges on
rebalance and reports no lag; it is not used).
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Set, Tuple

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector,
                               ProcessCollector, disable_created_metrics, generate_latest)

disable_created_metrics()  # no `*_created` series: they double the output for no use here

#: Everything a worker serves at /metrics (the process's CPU, memory, fds too).
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

EVENTS_CONSUMED = Counter(
    "weir_events_consumed", "Input events processed and committed (once per offset), "
    "decoded or dead-lettered.", ["pipeline", "topic", "partition"], registry=REGISTRY)
BATCH_PROCESSING = Histogram(
    "weir_batch_processing_seconds", "Time to process one source partition's batch: decode, "
    "window, send, from opening its transaction to the commit.", ["pipeline"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
GC_PAUSES = Histogram(
    "weir_gc_pause_seconds", "Garbage collector pauses of the worker process (the event loop "
    "stands still meanwhile), by generation collected.", ["generation"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
WINDOWS_EMITTED = Counter(
    "weir_windows_emitted", "Window results emitted (every revision, merged over partitions; "
    "sessions too).", ["pipeline", "view"], registry=REGISTRY)
WINDOW_REVISIONS = Counter(
    "weir_window_revisions", "Window results emitted again for allowed-late events "
    "(revision > 0).", ["pipeline", "view"], registry=REGISTRY)
LATE_EVENTS = Counter(
    "weir_late_events", "Events sent to the late-events topic, per aggregation they missed.",
    ["pipeline", "view"], registry=REGISTRY)
DEAD_LETTERS = Counter(
    "weir_dead_letters", "Events sent to the dead-letters topic, by reason.",
    ["pipeline", "reason"], registry=REGISTRY)
FRAUD_ALERTS = Counter(
    "weir_fraud_alerts", "Fraud alerts emitted, by alert type.", ["type"], registry=REGISTRY)
TRANSACTION_COMMITS = Counter(
    "weir_transaction_commits", "Kafka transactions committed by the sinks (a source "
    "partition's batches of a commit interval; pipeline 'offsets': consumed offsets alone).",
    ["pipeline"], registry=REGISTRY)
TRANSACTION_ABORTS = Counter(
    "weir_transaction_aborts", "Kafka transactions aborted by the sinks (the batch failed "
    "or was cancelled).", ["pipeline"], registry=REGISTRY)
REBALANCES = Counter(
    "weir_rebalances", "Partition assignments this worker received (one per rebalance).",
    registry=REGISTRY)
CONSUMER_LAG = Gauge(
    "weir_consumer_lag_records", "Records of a partition not processed yet: log end (last "
    "stable offset under exactly_once) minus the next offset to process.",
    ["pipeline", "topic", "partition"], registry=REGISTRY)
WATERMARK = Gauge(
    "weir_watermark_timestamp_seconds", "Event-time watermark of a source partition (epoch "
    "seconds, millisecond precision).", ["pipeline", "view", "partition"], registry=REGISTRY)
EVENT_TIME_LAG = Gauge(
    "weir_event_time_lag_seconds", "Wall clock minus the highest event time seen on a "
    "source partition.", ["pipeline", "partition"], registry=REGISTRY)
PARTITION_ASSIGNED = Gauge(
    "weir_partition_assigned", "1 for each partition this worker owns (active, not standby).",
    ["topic", "partition"], registry=REGISTRY)
TABLE_KEYS = Gauge(
    "weir_table_keys", "Keys of a table in this worker's active partitions (RocksDB's "
    "estimate: exact after plain writes, approximate after many overwrites and deletes).",
    ["table"],
    registry=REGISTRY)
STATE_DISK = Gauge(
    "weir_state_disk_bytes", "Size of this worker's table state on disk (RocksDB).",
    registry=REGISTRY)
RECOVERY_REMAINING = Gauge(
    "weir_changelog_recovery_remaining_records", "Changelog records still to be read to "
    "recover tables (kind: active or standby).", ["kind"], registry=REGISTRY)
RECOVERY_IN_PROGRESS = Gauge(
    "weir_changelog_recovery_in_progress", "1 while tables are being recovered from their "
    "changelogs.", registry=REGISTRY)

#: Names as Prometheus exposes them (counters with their ``_total``): the dashboard's vocabulary.
METRIC_NAMES = frozenset(
    [f"{c._name}_total" for c in (EVENTS_CONSUMED, WINDOWS_EMITTED, WINDOW_REVISIONS,
                                  LATE_EVENTS, DEAD_LETTERS, FRAUD_ALERTS, TRANSACTION_COMMITS,
                                  TRANSACTION_ABORTS, REBALANCES)]
    + [f"{BATCH_PROCESSING._name}_{suffix}" for suffix in ("bucket", "sum", "count")]
    + [g._name for g in (CONSUMER_LAG, WATERMARK, EVENT_TIME_LAG, PARTITION_ASSIGNED, TABLE_KEYS,
                         STATE_DISK, RECOVERY_REMAINING, RECOVERY_IN_PROGRESS)])


def exposition() -> bytes:
    """The text a Prometheus scrape of /metrics gets."""
    return generate_latest(REGISTRY)


def count_fraud_alert(alert_type: str, out: Optional[object] = None) -> None:
    """Count one fraud alert of ``alert_type`` (e.g. ``velocity``); given the batch's
    `app.sinks.Sender`, once its transaction commits."""
    inc = FRAUD_ALERTS.labels(alert_type).inc
    if out is None:
        inc()
    else:
        out.after_commit(inc)  # type: ignore[attr-defined]


class PartitionGauges:
    """Per-partition series of gauges, removed when the partition leaves this worker."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self._shown: Dict[Tuple[str, ...], Set[Tuple[str, ...]]] = {}

    def show(self, group: Tuple[str, ...], values: Dict[Tuple[str, ...], float]) -> None:
        """Set the series of ``group`` (the leading labels) to exactly ``values``."""
        current = {group + key for key in values}
        for labels in self._shown.get(group, set()) - current:
            self.gauge.remove(*labels)
        for key, value in values.items():
            self.gauge.labels(*group, *key).set(value)
        self._shown[group] = current

    def groups(self) -> Set[Tuple[str, ...]]:
        return set(self._shown)


def partitions_label(partitions: Iterable[int]) -> Dict[Tuple[str, ...], float]:
    """Helper for `PartitionGauges.show`: each partition with value 1."""
    return {(str(p),): 1.0 for p in partitions}
