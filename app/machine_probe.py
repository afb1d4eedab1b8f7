"""How fast this machine runs a fixed piece of Python now: a speed reading for benchmarks.

On a shared machine the same benchmark can take half again as much CPU time from one
half hour to the next (other tenants' load on the caches, the memory bus, the clock),
so a figure means little without the machine's speed at the time. `probe` times a fixed
workload shaped like a worker's (JSON decoding, dict and tuple churn, a heap, a sort) and,
since a worker's state does not fit in the caches, lookups in shuffled order over a table
of about 40 MB: runs of different moments can be compared, a lower reading is a faster
machine. Over one slow hour such lookups (over a table twice this size) followed the fraud
worker's CPU time: 0.9 s against 25.7 CPU s, 1.2 s against 29-30.5 s; the first part alone
moved less.
"""

from __future__ import annotations

import heapq
import random
import time
from typing import List

import orjson

ROUNDS = 3  # the workload is timed this many times; the fastest counts
RECORDS = 20_000
TABLE_ENTRIES = 1 << 18  # the lookups' table: about 40 MB of dict, tuples, ints and strings


def _workload() -> int:
    raws = [orjson.dumps({"id": f"t{i}", "user": f"u{i % 997}", "amount": i * 0.5,
                          "ts": 1_700_000_000_000 + i}) for i in range(RECORDS)]
    state = {}
    heap: List[tuple] = []
    for raw in raws:
        rec = orjson.loads(raw)
        key = rec["user"]
        times = state.get(key, ())
        state[key] = (times + (rec["ts"],))[-6:]
        heapq.heappush(heap, (rec["ts"], rec["id"]))
    out = [heapq.heappop(heap) for _ in range(len(heap))]
    table = {i * 2654435761 % (1 << 40): (i, str(i)) for i in range(TABLE_ENTRIES)}
    keys = list(table)
    random.Random(7).shuffle(keys)
    total = 0
    for key in keys:  # in shuffled order: most lookups miss the caches
        total += table[key][0]
    return len(sorted(state.items(), key=lambda kv: kv[1][-1])) + len(out) + total


def probe(rounds: int = ROUNDS) -> float:
    """CPU milliseconds the fixed workload takes on this machine now (the fastest of
    ``rounds``; CPU time, so other processes taking turns on the cores do not count)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time()
        _workload()
        best = min(best, time.thread_time() - started)
    return best * 1000
