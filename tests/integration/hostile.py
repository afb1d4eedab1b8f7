"""Hostile input for both pipelines: each payload with the dead-letter reason it must get."""

from __future__ import annotations

import json
from typing import List, Optional, Tuple

T = 1_700_000_000_000
MEGABYTE_STRING = "x" * 1_000_000  # with its JSON around it, still under Kafka's 1 MiB default


def _order(**fields) -> bytes:
    base = {"orderId": "hostile", "userId": "u", "amount": 5.0, "timestamp": T, "productId": "p"}
    return json.dumps({**base, **fields}).encode()


def _pageview(**fields) -> bytes:
    base = {"sessionId": "hostile", "page": "/", "timestamp": T}
    return json.dumps({**base, **fields}).encode()


HOSTILE_ORDERS: List[Tuple[Optional[bytes], str]] = [
    (None, "empty"),
    (b"\xff\xfe\xfd", "invalid_utf8"),
    (b'{"orderId": "h1", "amount": ', "invalid_json"),
    (b'{"orderId":"h","userId":"u","amount":NaN,"timestamp":1700000000000,"productId":"p"}',
     "invalid_json"),
    (b'{"orderId":"h","userId":"u","amount":1e400,"timestamp":1700000000000,"productId":"p"}',
     "invalid_json"),
    (b"null", "wrong_shape"),
    (b"42", "wrong_shape"),
    (_order(orderId="h-neg", amount=-3.5), "invalid_value"),
    (_order(orderId="h-huge", amount=1e300), "invalid_value"),
    (_order(orderId="h-str", amount="12"), "wrong_type"),
    (_order(orderId=None), "wrong_type"),
    (_order(orderId="h-ts-str", timestamp="2023-11-14T22:13:20Z"), "wrong_type"),
    (_order(orderId="h-ts-huge", timestamp=2**70), "invalid_value"),
    (_order(orderId="h-epoch", timestamp=0), "past_timestamp"),
    (_order(orderId="h-negative-ts", timestamp=-86_400_000), "past_timestamp"),
    (_order(orderId="h-big", productId=MEGABYTE_STRING), "too_large"),
]

HOSTILE_PAGEVIEWS: List[Tuple[Optional[bytes], str]] = [
    (None, "empty"),
    (b"\xc0\xaf", "invalid_utf8"),
    (b"{'sessionId': 'single quotes'}", "invalid_json"),
    (b'["/"]', "wrong_shape"),
    (_pageview(sessionId=17), "wrong_type"),
    (_pageview(sessionId="h-ua", page=None), "wrong_type"),
    (_pageview(sessionId="h-ts", timestamp=None), "wrong_type"),
    (_pageview(sessionId="h-epoch", timestamp=1), "past_timestamp"),
    (_pageview(sessionId="h-big", page="/" + MEGABYTE_STRING), "too_large"),
]
