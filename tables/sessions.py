"""Event-time session windows per key, in batches.

Per key, events less than ``gap = inactivity_gap_ms`` apart belong to one
session ``[start, end]``: ``start`` is its first event time and ``end`` its
last, both inclusive. Events exactly ``gap`` apart are in different sessions.
An event at ``ts`` reaches every session of its key with
``start - gap < ts < end + gap`` and merges them all into one (an out-of-order
event can bridge two sessions).

Per source partition the watermark is the highest event time seen minus the
allowed out-of-orderness (none before the first event). With ``L`` the allowed
lateness and ``W`` the watermark when an event arrives:

- the session the event would make (after merging) has ``end + gap + L <= W``:
  the event is *late*, handed back, never counted;
- it has ``end + gap <= W``: the session is due; it is updated and emitted at
  once, next revision;
- otherwise the event is folded into an open session.

Whenever the watermark advances, every open session with ``end + gap <= W``
fires (its next revision, 0 the first time), oldest ``end + gap`` first (ties
by key, then start); a session is purged (its key's entry rewritten, or
tombstoned when the key has no session left) once ``end + gap + L <= W``.
Revisions count the emissions of one ``(key, start)`` from 0. When a merge
absorbs a session already emitted under another start, a `SessionRetraction`
for that ``(key, start)`` is emitted at once, with the next revision::

    gap 10 s, out-of-orderness 0, allowed lateness 30 s, one key
    ts=0s   -> [0s, 0s] opens                                  watermark 0s
    ts=5s   -> [0s, 5s]
    ts=20s  -> [20s, 20s] opens (15 s >= gap after 5s); watermark 20s:
               [0s, 5s] fires, revision 0 (5s + gap <= 20s)
    ts=35s  -> [35s, 35s] opens; watermark 35s: [20s, 20s] fires, revision 0
    ts=12s  -> bridges both: [0s, 20s] revision 1, retract (20s) revision 1
    ts=61s  -> [61s, 61s] opens; watermark 61s: [35s, 35s] fires, revision 0;
               61s >= 20s + gap + 30s: [0s, 20s] purged
    ts=18s  -> late (would be [18s, 18s], 18s + 10s + 30s <= 61s)

Batches give exactly the outputs of event-at-a-time processing, in the same order.
"""

from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from tables.aggregators import Aggregator
from tables.engine import Item, LateItem, S
from tables.errors import WeirError
from tables.state import Entries, Meta, PartitionCache, PartitionClock, PartitionStore
from tables.watermark import BoundedOutOfOrderness
from tables.windows import SessionWindow


@dataclass(frozen=True)
class SessionResult:
    """One emission of a session ``[start_ms, end_ms]`` (both event times, inclusive)."""

    partition: int
    key: str
    start_ms: int
    end_ms: int
    acc: Any
    revision: int
    event_count: int


@dataclass(frozen=True)
class SessionRetraction:
    """An emitted session ``(key, start_ms)`` absorbed by a merge: delete it downstream.

    ``revision`` is one past its last emitted revision; ``end_ms`` its end when absorbed.
    """

    partition: int
    key: str
    start_ms: int
    end_ms: int
    revision: int


@dataclass
class SessionBatchResult:
    """What one batch produced, each list in emission order."""

    emitted: List[SessionResult] = field(default_factory=list)
    retracted: List[SessionRetraction] = field(default_factory=list)
    late: List[LateItem] = field(default_factory=list)
    skipped: int = 0
    watermark_ms: Optional[int] = None


@dataclass(eq=False)  # compared by identity
class _Session:
    start: int
    end: int
    acc: Any
    count: int = 0
    revision: int = -1  # last revision emitted under (key, start); -1: none

    def to_entry(self) -> Dict[str, Any]:
        return {"start": self.start, "end": self.end, "acc": self.acc,
                "n": self.count, "rev": self.revision}


Deadline = Tuple[int, str, int]  # (event time, key, session start)


@dataclass
class _PartitionSessions:
    clock: PartitionClock
    sessions: Dict[str, List[_Session]]  # per key, sorted by start, at least gap apart
    closing: List[Deadline]  # heap, at most one live entry per open session, <= its end + gap
    purging: List[Deadline]  # heap, one live entry per session, <= its end + gap + L


class SessionEngine(PartitionCache[_PartitionSessions]):
    """Session-window aggregation in event time, one state per source partition."""

    def __init__(self, window: SessionWindow, max_out_of_orderness_ms: int,
                 aggregator: Aggregator, store: PartitionStore) -> None:
        BoundedOutOfOrderness(max_out_of_orderness_ms)  # validates the setting
        super().__init__(store)
        self.window = window
        self.gap = window.inactivity_gap_ms
        self.lateness = window.allowed_lateness_ms
        self.max_out_of_orderness_ms = max_out_of_orderness_ms
        self.aggregator = aggregator

    # ---------------------------------------------------------------- state

    def _load(self, partition: int, meta: Meta, entries: Entries) -> _PartitionSessions:
        """Re-index a partition's recovered sessions on their close and purge times."""
        clock = PartitionClock.from_meta(meta, self.max_out_of_orderness_ms)
        sessions = {key: [_Session(e["start"], e["end"], e["acc"], e["n"], e["rev"])
                          for e in value] for key, value in entries.items()}
        state = _PartitionSessions(clock, sessions, [], [])
        for key, listed in sessions.items():
            for s in listed:
                if self._is_open(s, clock.watermark.watermark_ms):
                    state.closing.append((s.end + self.gap, key, s.start))
                state.purging.append((s.end + self.gap + self.lateness, key, s.start))
        heapq.heapify(state.closing)
        heapq.heapify(state.purging)
        return state

    def clock(self, partition: int) -> PartitionClock:
        return self._state(partition).clock

    # ---------------------------------------------------------------- processing

    def process(self, partition: int, items: Sequence[Item[S]],
                next_offset: Optional[int] = None) -> SessionBatchResult:
        """Fold a batch of one partition's keyed events (in offset order).

        ``next_offset`` is the offset after the batch's last input, when inputs
        the engine never saw (dead letters) follow its last item.
        """
        for item in items:
            if item.key is None:
                raise WeirError(f"session events need a key; offset {item.offset} has none")
        state = self._state(partition)
        clock = state.clock
        wm = clock.watermark
        result = SessionBatchResult()
        changed: Set[str] = set()
        offset_before = clock.next_offset
        for item in items:
            if clock.is_replay(item.offset):
                result.skipped += 1
                continue
            clock.next_offset = item.offset + 1
            watermark = wm.watermark_ms
            self._fold(partition, state, item, watermark, result, changed)
            if watermark is None or item.ts_ms - self.max_out_of_orderness_ms > watermark:
                wm.observe(item.ts_ms)
                self._fire(partition, state, result, changed)
                self._purge(state, changed)
        clock.advance_to(next_offset)
        if clock.next_offset != offset_before or changed:
            self._save(partition, state, changed)
        result.watermark_ms = wm.watermark_ms
        return result

    def _fold(self, partition: int, state: _PartitionSessions, item: Item[S],
              watermark: Optional[int], result: SessionBatchResult, changed: Set[str]) -> None:
        """Merge the event with every session of its key within reach, or hand it back late."""
        key, ts, gap = item.key, item.ts_ms, self.gap
        listed = state.sessions.get(key, [])
        reached = [s for s in listed if s.start - gap < ts < s.end + gap]
        start = min([ts] + [s.start for s in reached])
        end = max([ts] + [s.end for s in reached])
        if watermark is not None and end + gap + self.lateness <= watermark:
            result.late.append(LateItem(item, start, end + gap, watermark))
            return
        merged = self._merge(partition, key, start, end, reached, result)
        self.aggregator.add(merged.acc, item.value)
        merged.count += 1
        kept = [s for s in listed if all(s is not r for r in reached)]
        state.sessions[key] = sorted(kept + [merged], key=lambda s: s.start)
        changed.add(key)
        if not self._is_open(merged, watermark):  # due already: emit the update now
            self._emit(partition, key, merged, result)
        elif not any(s.start == start and self._is_open(s, watermark) for s in reached):
            heapq.heappush(state.closing, (end + gap, key, start))  # new or reopened
        if not any(s.start == start for s in reached):
            heapq.heappush(state.purging, (end + gap + self.lateness, key, start))

    def _merge(self, partition: int, key: str, start: int, end: int,
               reached: List[_Session], result: SessionBatchResult) -> _Session:
        """One session ``[start, end]`` from the reached ones; retract the emitted others."""
        base = next((s for s in reached if s.start == start), None)
        merged = _Session(start, end, self.aggregator.zero())
        if base is not None:
            merged = _Session(start, end, base.acc, base.count, base.revision)
        for s in reached:
            if s is base:
                continue
            self.aggregator.merge(merged.acc, s.acc)
            merged.count += s.count
            if s.revision >= 0:
                result.retracted.append(
                    SessionRetraction(partition, key, s.start, s.end, s.revision + 1))
        return merged

    def _fire(self, partition: int, state: _PartitionSessions, result: SessionBatchResult,
              changed: Set[str]) -> None:
        """Fire every open session whose end + gap the watermark reached, oldest first."""
        watermark = state.clock.watermark.watermark_ms
        for key, session in self._pop_due(state, state.closing, watermark, self.gap):
            self._emit(partition, key, session, result)
            changed.add(key)

    def _purge(self, state: _PartitionSessions, changed: Set[str]) -> None:
        """Drop the sessions past their allowed lateness."""
        watermark = state.clock.watermark.watermark_ms
        for key, session in self._pop_due(state, state.purging, watermark,
                                          self.gap + self.lateness):
            remaining = [s for s in state.sessions[key] if s is not session]
            if remaining:
                state.sessions[key] = remaining
            else:
                del state.sessions[key]
            changed.add(key)

    def _pop_due(self, state: _PartitionSessions, heap: List[Deadline], watermark: int,
                 after_end: int) -> List[Tuple[str, _Session]]:
        """Pop, in deadline order, the sessions whose ``end + after_end`` is <= watermark.

        Entries are lazy: a session extended since its entry was pushed is pushed
        again at its current deadline; entries of absorbed sessions are dropped.
        """
        due = []
        while heap and heap[0][0] <= watermark:
            deadline, key, start = heapq.heappop(heap)
            session = self._find(state, key, start)
            if session is None:
                continue
            current = session.end + after_end
            if current > deadline:
                heapq.heappush(heap, (current, key, start))
            elif current == deadline:
                due.append((key, session))
        return due

    # ---------------------------------------------------------------- helpers

    def _is_open(self, session: _Session, watermark: Optional[int]) -> bool:
        return watermark is None or session.end + self.gap > watermark

    @staticmethod
    def _find(state: _PartitionSessions, key: str, start: int) -> Optional[_Session]:
        return next((s for s in state.sessions.get(key, ()) if s.start == start), None)

    @staticmethod
    def _emit(partition: int, key: str, session: _Session, result: SessionBatchResult) -> None:
        session.revision += 1
        result.emitted.append(SessionResult(partition, key, session.start, session.end,
                                            copy.deepcopy(session.acc), session.revision,
                                            session.count))

    def _save(self, partition: int, state: _PartitionSessions, changed: Set[str]) -> None:
        """Persist the changed keys' sessions and the clock; tombstone emptied keys."""
        updated = {key: [s.to_entry() for s in state.sessions[key]]
                   for key in changed if key in state.sessions}
        deleted = [key for key in changed if key not in state.sessions]
        self.store.save(partition, state.clock.to_meta(), updated, deleted)
