"""Helpers for batches of Faust events."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from faust.types import EventT


def split_by_partition(events: Sequence[EventT]) -> List[Tuple[int, List[EventT]]]:
    """Group a batch by source partition, keeping offset order within each."""
    groups: Dict[int, List[EventT]] = {}
    for event in events:
        groups.setdefault(event.message.partition, []).append(event)
    return sorted(groups.items())
