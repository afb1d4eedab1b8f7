"""Weir's event-time window engine.

Knows nothing of orders, pageviews or fraud: window definitions (`windows`),
watermarks (`watermark`), aggregations (`aggregators`), per-partition window
state (`state`) and the batch engine that ties them together (`engine`).
"""
