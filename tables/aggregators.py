"""Aggregations the engine folds events into, one accumulator per window.

An accumulator is a plain JSON-friendly list so that it can be stored in a
Faust table and its changelog as is.
"""

from __future__ import annotations

from typing import Any, List, Protocol


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
