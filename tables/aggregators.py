"""Aggregations the engine folds events into, one accumulator per window.

An accumulator is a plain JSON-friendly list so that it can be stored in a
Faust table and its changelog as is.
"""

from __future__ import annotations

import heapq
from typing import Any, List, Optional, Protocol, Sequence, Tuple


class Aggregator(Protocol):
    """How to fold values into a window's accumulator and merge two of them."""

    def zero(self) -> List[Any]:
        """A fresh accumulator for an empty window."""

    def add(self, acc: List[Any], value: Any) -> None:
        """Fold one value into ``acc`` in place."""

    def merge(self, acc: List[Any], other: List[Any]) -> None:
        """Fold another accumulator into ``acc`` in place."""


class CountAndSum:
    """Count of values and their sum: ``[count, total]``."""

    def zero(self) -> List[Any]:
        return [0, 0.0]

    def add(self, acc: List[Any], value: float) -> None:
        acc[0] += 1
        acc[1] += value

    def merge(self, acc: List[Any], other: List[Any]) -> None:
        acc[0] += other[0]
        acc[1] += other[1]


class Count:
    """Number of values: ``n``, kept in a one-item list ``[n]``."""

    def zero(self) -> List[Any]:
        return [0]

    def add(self, acc: List[Any], value: Any) -> None:
        acc[0] += 1

    def merge(self, acc: List[Any], other: List[Any]) -> None:
        acc[0] += other[0]


class Frequencies:
    """How often each string value occurs: ``[{value: count}]``; ``None`` is not counted."""

    def zero(self) -> List[Any]:
        return [{}]

    def add(self, acc: List[Any], value: Optional[str]) -> None:
        if value is not None:
            acc[0][value] = acc[0].get(value, 0) + 1

    def merge(self, acc: List[Any], other: List[Any]) -> None:
        counts = acc[0]
        for value, n in other[0].items():
            counts[value] = counts.get(value, 0) + n

    @staticmethod
    def top(acc: List[Any], k: int) -> List[Tuple[str, int]]:
        """The ``k`` most frequent values, most frequent first, ties by value ascending."""
        return heapq.nsmallest(k, acc[0].items(), key=lambda kv: (-kv[1], kv[0]))


class Distinct(Frequencies):
    """Distinct string values (exact, mergeable across partitions); ``None`` is not counted."""

    @staticmethod
    def size(acc: List[Any]) -> int:
        return len(acc[0])


class FirstAndLast:
    """The first and the last value by an ordering key: ``[first_key, first, last_key, last]``.

    Values are ``(order_key, payload)`` with ``order_key`` a list such as
    ``[event_time_ms, offset]``; ties keep the value seen first.
    """

    def zero(self) -> List[Any]:
        return [None, None, None, None]

    def add(self, acc: List[Any], value: Tuple[List[Any], Any]) -> None:
        order_key, payload = value
        self._fold(acc, list(order_key), payload, list(order_key), payload)

    def merge(self, acc: List[Any], other: List[Any]) -> None:
        if other[0] is not None:
            self._fold(acc, other[0], other[1], other[2], other[3])

    @staticmethod
    def _fold(acc: List[Any], first_key: List[Any], first: Any, last_key: List[Any],
              last: Any) -> None:
        if acc[0] is None or first_key < acc[0]:
            acc[0], acc[1] = first_key, first
        if acc[2] is None or last_key > acc[2]:
            acc[2], acc[3] = last_key, last


class Fields:
    """Several aggregations side by side: values and accumulators are lists, one item each."""

    def __init__(self, *parts: Aggregator) -> None:
        self.parts = parts

    def zero(self) -> List[Any]:
        return [part.zero() for part in self.parts]

    def add(self, acc: List[Any], value: Sequence[Any]) -> None:
        for part, part_acc, part_value in zip(self.parts, acc, value):
            part.add(part_acc, part_value)

    def merge(self, acc: List[Any], other: List[Any]) -> None:
        for part, part_acc, part_other in zip(self.parts, acc, other):
            part.merge(part_acc, part_other)
