"""A worker's /metrics: the web view, and the gauges sampled from the app's state.

`install(app, settings)` adds the ``/metrics`` page to the worker's Faust web
server, counts rebalances, and samples on a timer (``WEIR_METRICS_INTERVAL_MS``)
what no batch reports: partition ownership, watermarks and event-time lag of
the engines the views registered (`watch_engine`), table keys, state size on
disk and changelog recovery. Consumer lag comes from the stall watches, which
read the log ends anyway (`lag_reporter`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from prometheus_client import CONTENT_TYPE_LATEST

from app import metrics
from app.clock import wall_clock_ms
from app.settings import Settings

log = logging.getLogger(__name__)

#: (pipeline, view, source topic, engine) of every windowed view of this worker
_engines: List[Tuple[str, str, str, Any]] = []
_watermarks = metrics.PartitionGauges(metrics.WATERMARK)
_event_time_lag = metrics.PartitionGauges(metrics.EVENT_TIME_LAG)
_lag = metrics.PartitionGauges(metrics.CONSUMER_LAG)
_assigned = metrics.PartitionGauges(metrics.PARTITION_ASSIGNED)


def watch_engine(pipeline: str, view: str, topic: str, engine: Any) -> None:
    """Report the watermark and event-time lag of ``engine``'s partitions (a `WindowEngine`
    over ``topic``)."""
    _engines.append((pipeline, view, topic, engine))


def lag_reporter(pipeline: str, topic: str) -> Callable[[Dict[int, int]], None]:
    """What a stall watch calls with the lag of every partition of ``topic`` it holds."""
    def report(lags: Dict[int, int]) -> None:
        _lag.show((pipeline, topic), {(str(p),): float(n) for p, n in lags.items()})

    return report


def sample_engines(now_ms: int, owned: Optional[Dict[str, Set[int]]] = None) -> None:
    """Watermark and event-time lag of each partition the engines hold now; given ``owned``
    (topic -> partitions this worker owns as an active), of those partitions only."""
    lags: Dict[str, Dict[Tuple[str, ...], float]] = {}
    for pipeline, view, topic, engine in _engines:
        marks = {}
        for partition in engine.partitions():
            if owned is not None and partition not in owned.get(topic, ()):
                continue
            wm = engine.clock(partition).watermark
            if wm.max_event_ms is None:
                continue
            marks[(str(partition),)] = wm.watermark_ms / 1000
            lags.setdefault(pipeline, {})[(str(partition),)] = (now_ms - wm.max_event_ms) / 1000
        _watermarks.show((pipeline, view), marks)
    for pipeline in {p for p, _, _, _ in _engines}:
        _event_time_lag.show((pipeline,), lags.get(pipeline, {}))


def sample_assignment(app: Any) -> Dict[str, Set[int]]:
    """1 for every partition of a stream this worker owns as an active (changelogs, standbys
    and Faust's own assignor topic left out); returns them by topic."""
    by_topic: Dict[str, Set[int]] = {}
    changelogs = app.tables.changelog_topics
    for tp in app.consumer.assignment():
        if tp.topic in changelogs or tp.topic.endswith("__assignor-__leader"):
            continue
        if not app.assignor.is_standby(tp):
            by_topic.setdefault(tp.topic, set()).add(tp.partition)
    for topic in set(by_topic) | {g[0] for g in _assigned.groups()}:
        _assigned.show((topic,), metrics.partitions_label(sorted(by_topic.get(topic, ()))))
    return by_topic


def remaining(highwaters: Dict[Any, Any], offsets: Dict[Any, Any]) -> int:
    """Changelog records left to read: Faust's ``*_remaining_total``, without the partitions
    whose offset is not known yet. Right after a rebalance a newly assigned partition with
    nothing persisted has None there until its pass builds it, and Faust's own sum raised
    TypeError on it (in this timer, a crash of the app)."""
    total = 0
    for tp, highwater in highwaters.items():
        offset = offsets.get(tp, 0)
        if highwater is not None and offset is not None and highwater >= 0 and offset >= 0:
            total += highwater - offset
    return total


def sample_tables(app: Any) -> None:
    """Keys of each table in the active partitions, state size on disk, recovery progress."""
    recovery = app.tables.recovery
    metrics.RECOVERY_IN_PROGRESS.set(1 if recovery.in_recovery else 0)
    metrics.RECOVERY_REMAINING.labels("active").set(
        remaining(recovery.active_highwaters, recovery.active_offsets))
    metrics.RECOVERY_REMAINING.labels("standby").set(
        remaining(recovery.standby_highwaters, recovery.standby_offsets))
    metrics.STATE_DISK.set(disk_bytes(Path(app.conf.tabledir)))
    if recovery.in_recovery or app.rebalancing:
        return  # the stores are being rebuilt: keep the last counts
    for name, table in app.tables.items():
        try:
            metrics.TABLE_KEYS.labels(name).set(table_keys(table))
        except Exception as exc:  # a store closing during a stop or rebalance
            log.debug("table %s: keys not counted: %r", name, exc)


def table_keys(table: Any) -> int:
    """Keys of the table in this worker's active partitions.

    On RocksDB (rocksdict) RocksDB's own estimate per partition database, without Faust's
    offset key: constant time. Faust's ``len(table)`` iterates every key, on the event loop:
    at a million keys that stalled the worker for about a second every metrics interval.
    The estimate is exact after plain writes (a restore, new keys) and may drift after many
    overwrites and deletes until RocksDB compacts them. Other stores: ``len(table)``."""
    data = table.data
    if not getattr(data, "use_rocksdict", False):
        return len(table)
    total = 0
    for db in data._dbs_for_actives():
        estimate = db.property_int_value("rocksdb.estimate-num-keys") or 0
        if db.get(data.offset_key) is not None:
            estimate -= 1
        total += max(estimate, 0)
    return total


def disk_bytes(folder: Path) -> int:
    """Total size of the files under ``folder`` (0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:  # a RocksDB file replaced while walking
                pass
    return total


def install(app: Any, settings: Settings) -> None:
    """Serve /metrics on the app's web server and keep the sampled gauges current."""

    @app.page("/metrics")
    async def prometheus_metrics(self: Any, request: Any) -> Any:
        """Prometheus exposition of this worker's metrics."""
        return self.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.on_partitions_assigned.connect
    async def count_rebalance(app: Any, assigned: Any, **kwargs: Any) -> None:
        metrics.REBALANCES.inc()
        sample_assignment(app)

    @app.timer(interval=settings.metrics_interval_ms / 1000)
    async def sample_metrics() -> None:
        owned = sample_assignment(app)
        sample_engines(wall_clock_ms(), owned)
        sample_tables(app)
