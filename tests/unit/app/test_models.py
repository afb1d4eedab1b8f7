import base64
import json

import pytest

from app.models import BadEvent, InputLimits, dead_letter, decode_order, decode_pageview

GOOD = b'{"orderId":"o1","userId":"u1","amount":12.5,"timestamp":1700000000000,"productId":"p1"}'


def test_valid_order_decodes():
    order = decode_order(GOOD)
    assert order.amount == 12.5 and order.timestamp == 1_700_000_000_000


@pytest.mark.parametrize(
    "raw, reason",
    [
        (None, "empty"),
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_utf8"),
        (b"[1,2]", "wrong_shape"),
        (b'{"orderId":"o1","userId":"u1","amount":1,"productId":"p"}', "missing_field"),
        (b'{"orderId":"o1","userId":"u1","amount":"1","timestamp":1,"productId":"p"}', "wrong_type"),
        (b'{"orderId":"o1","userId":"u1","amount":true,"timestamp":1,"productId":"p"}', "wrong_type"),
        (b'{"orderId":"o1","userId":"u1","amount":1,"timestamp":1.5,"productId":"p"}', "wrong_type"),
        (b'{"orderId":"o1","userId":"u1","amount":-1,"timestamp":1,"productId":"p"}', "invalid_value"),
        (b'{"orderId":"o1","userId":"u1","amount":1e400,"timestamp":1,"productId":"p"}', None),
        (b'{"orderId":"o1","userId":"u1","amount":1,"timestamp":1e30,"productId":"p"}', "invalid_value"),
    ],
)
def test_malformed_order_raises_with_a_reason(raw, reason):
    with pytest.raises(BadEvent) as info:
        decode_order(raw)
    if reason:
        assert info.value.reason == reason


def test_dead_letter_keeps_the_raw_bytes_and_position():
    with pytest.raises(BadEvent) as info:
        decode_order(b"\xff{")
    dl = dead_letter("orders", info.value, b"\xff{", "orders", 3, 42)
    assert dl.rawBase64 == "/3s=" and dl.sourcePartition == 3 and dl.sourceOffset == 42
    assert dl.reason == "invalid_utf8"


def test_pageview_optional_fields_absent_null_or_empty_mean_none():
    view = decode_pageview(b'{"sessionId":"s1","page":"/","timestamp":1700000000005,'
                           b'"referrer":"","userAgent":"x"}')
    assert view == ("s1", None, "/", None, 1700000000005)
    view = decode_pageview(b'{"sessionId":"s1","userId":"u","page":"/a","referrer":"r",'
                           b'"timestamp":1700000000005.0}')
    assert view == ("s1", "u", "/a", "r", 1700000000005)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"page":"/","timestamp":1}', "missing_field"),
        (b'{"sessionId":"","page":"/","timestamp":1}', "invalid_value"),
        (b'{"sessionId":"s","page":["/"],"timestamp":1}', "wrong_type"),
        (b'{"sessionId":"s","page":"/","timestamp":1700000000000,"userId":3}', "wrong_type"),
        (b'{"sessionId":"s","page":"/","timestamp":1.5}', "wrong_type"),
    ],
)
def test_bad_pageviews_name_their_reason(raw, reason):
    with pytest.raises(BadEvent) as err:
        decode_pageview(raw)
    assert err.value.reason == reason


def test_event_larger_than_the_limit_is_too_large():
    limits = InputLimits(max_event_bytes=100)
    raw = json.dumps({"orderId": "o" * 200, "userId": "u", "amount": 1,
                      "timestamp": 1_700_000_000_000, "productId": "p"}).encode()
    with pytest.raises(BadEvent) as exc:
        decode_order(raw, limits)
    assert exc.value.reason == "too_large" and "WEIR_MAX_EVENT_BYTES=100" in str(exc.value)


def test_timestamp_before_the_minimum_event_time_is_a_past_timestamp():
    with pytest.raises(BadEvent) as exc:
        decode_pageview(b'{"sessionId":"s","page":"/","timestamp":0}')
    assert exc.value.reason == "past_timestamp" and "WEIR_MIN_EVENT_TIME_MS" in str(exc.value)
    assert decode_pageview(b'{"sessionId":"s","page":"/","timestamp":0}',
                           InputLimits(min_event_time_ms=0)).timestamp == 0


def test_amount_above_the_maximum_is_invalid():
    raw = b'{"orderId":"o","userId":"u","amount":1e12,"timestamp":1700000000000,"productId":"p"}'
    with pytest.raises(BadEvent) as exc:
        decode_order(raw)
    assert exc.value.reason == "invalid_value" and "WEIR_MAX_AMOUNT" in str(exc.value)
    assert decode_order(raw, InputLimits(max_amount=1e13)).amount == 1e12


def test_dead_letter_keeps_at_most_max_raw_bytes_and_says_so():
    raw = b"x" * 1_000_000
    letter = dead_letter("orders", BadEvent("too_large", "big"), raw, "orders", 2, 7, 1000)
    assert letter.rawBytes == 1_000_000 and letter.rawTruncated
    assert letter.raw == "x" * 1000 and base64.b64decode(letter.rawBase64) == raw[:1000]
    small = dead_letter("orders", BadEvent("invalid_json", "bad"), b"{", "orders", 2, 8, 1000)
    assert small.rawBytes == 1 and not small.rawTruncated and small.raw == "{"


TX = {"transactionId": "t1", "userId": "u1", "amount": 12.5, "merchantId": "m1",
      "location": "Oslo", "timestamp": 1_700_000_000_000}


def _tx(**changes):
    import json

    data = {**TX, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def test_transaction_decodes_with_and_without_coordinates():
    from app.models import decode_transaction

    assert decode_transaction(_tx()).lat is None
    tx = decode_transaction(_tx(lat=59.9, lon=10.7, amount=0))
    assert (tx.lat, tx.lon, tx.amount, tx.timestamp) == (59.9, 10.7, 0.0, 1_700_000_000_000)
    assert decode_transaction(_tx(lat=None, lon=None)).lon is None


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"transactionId": ""}, "invalid_value"),
        ({"userId": ...}, "missing_field"),
        ({"userId": ""}, "invalid_value"),
        ({"amount": -0.01}, "invalid_value"),
        ({"amount": True}, "wrong_type"),
        ({"amount": "5"}, "wrong_type"),
        ({"location": ""}, "invalid_value"),
        ({"merchantId": 3}, "wrong_type"),
        ({"timestamp": 1.5}, "wrong_type"),
        ({"lat": 10.0}, "invalid_value"),
        ({"lat": 10.0, "lon": None}, "invalid_value"),
        ({"lat": 91.0, "lon": 0.0}, "invalid_value"),
        ({"lat": 0.0, "lon": -180.5}, "invalid_value"),
        ({"lat": "1", "lon": 0.0}, "wrong_type"),
    ],
)
def test_malformed_transaction_raises_with_a_reason(changes, reason):
    from app.models import decode_transaction

    with pytest.raises(BadEvent) as info:
        decode_transaction(_tx(**changes))
    assert info.value.reason == reason


@pytest.mark.parametrize("raw", [b'{"transactionId":"t","userId":"u","amount":NaN}',
                                 b'{"transactionId":"t","userId":"u","amount":1e400,'
                                 b'"merchantId":"m","location":"x","timestamp":1}'])
def test_transaction_amount_must_be_finite(raw):
    from app.models import decode_transaction

    with pytest.raises(BadEvent):
        decode_transaction(raw)


ORDER_FIELD_VALUES = {
    "orderId": ["o1", "", 7, None, True],
    "userId": ["u1", "", None, 3.5],
    "amount": [0, 12.5, 3, -1, -0.0, 1e9, 1e9 + 1, float("nan"), "1", True, None],
    "timestamp": [1_700_000_000_000, 946_684_800_000, 946_684_799_999, 2**63, 1.7e12, 1.5,
                  "1", True, None],
    "productId": ["p1", "", None, 0],
}


def _accepted_alike(kind, raws, monkeypatch):
    """Each of ``raws`` through ``decode_<kind>`` and through its field checks alone (the
    msgspec path off): the same record or the same reason. Returns the records decoded."""
    import app.models as models

    decode = getattr(models, f"decode_{kind}")
    accepted = []
    for raw in raws:
        fast = _outcome(lambda: decode(raw))
        with monkeypatch.context() as m:
            m.setattr(models, f"_plain_{kind}", lambda raw, limits: None)
            assert fast == _outcome(lambda: decode(raw)), raw
        if not isinstance(fast, tuple) or fast[0] != "bad":
            assert type(fast.timestamp) is int
            accepted.append(fast)
    return accepted


def _outcome(decode):
    try:
        return decode()
    except BadEvent as exc:
        return ("bad", exc.reason, str(exc))


def test_the_plain_order_path_decodes_exactly_as_the_field_checks(monkeypatch):
    import itertools
    import random

    rng = random.Random(5)
    fields = list(ORDER_FIELD_VALUES)
    cases = [dict(zip(fields, values)) for values in
             itertools.product(*(ORDER_FIELD_VALUES[f] for f in fields))]
    raws = []
    for case in rng.sample(cases, 3000) + [json.loads(GOOD)]:
        if rng.random() < 0.1:
            case.pop(rng.choice(fields))
        raws.append(json.dumps(case).encode())
    good = GOOD.strip()[1:-1]
    raws += [b"{" + good + b', "timestamp": 1700000000001}', b"{" + good + b', "x": [1, {}]}',
             b"{" + good.replace(b'"o1"', b'"\\ud800"') + b"}",
             b"{" + good.replace(b'"o1"', b'"\xff"') + b"}", b"[1]", b"", b"{"]
    accepted = _accepted_alike("order", raws, monkeypatch)
    assert len(accepted) > 20 and all(type(o.amount) is float for o in accepted)


TX_FIELD_VALUES = {  # the first two of each valid
    "transactionId": ["t1", "\u00e9\u4e2d", "a\"b", "", 7, None, True],
    "userId": ["u1", "u-2", "", None, 3.5, ["u"]],
    "amount": [12.5, 3, 0, -0.0, 2**53 + 1, 10**20, -1, float("nan"), "1", True, None],
    "merchantId": ["m1", "", None, 0],
    "location": ["Oslo", "Bergen", "", None, {"city": "Oslo"}],
    "timestamp": [1_700_000_000_000, 946_684_800_000, 2**63 - 1, 946_684_799_999, 2**63,
                  2**64, 1.7e12, 1.5, "1", True, None],
    "lat": [59.9, -90, 0, 90.5, "1", True, None, ...],
    "lon": [10.7, -180, 180.5, None, ...],
}


def test_the_plain_transaction_path_decodes_exactly_as_the_field_checks(monkeypatch):
    import random

    rng = random.Random(7)
    fields = list(TX_FIELD_VALUES)
    raws = [json.dumps(TX).encode()]
    for _ in range(6000):  # mostly the usual values (the first few of each field)
        case = {f: rng.choice(TX_FIELD_VALUES[f][:2] if rng.random() < 0.85
                              else TX_FIELD_VALUES[f]) for f in fields}
        if rng.random() < 0.3:
            case["lat"], case["lon"] = ..., ...
        raws.append(json.dumps({k: v for k, v in case.items() if v is not ...}).encode())
    good = json.dumps(TX)[1:-1].encode()
    raws += [
        b"{" + good + b', "timestamp": 1700000000001}',  # a duplicate key: the last one
        b"{" + good + b', "extra": {"nested": [1, 2]}}',
        b"{" + good.replace(b'"t1"', b'"\\ud800"') + b"}",  # a lone surrogate
        b"{" + good.replace(b'"t1"', b'"\\ud83d\\ude00"') + b"}",
        b"{" + good.replace(b'"t1"', b'"\xff"') + b"}",  # not UTF-8
        b"{" + good.replace(b"12.5", b"1e400") + b"}",
        b"{" + good.replace(b"12.5", b"1" + b"0" * 400) + b"}",
        b"{" + good.replace(b"12.5", b"12.50000000000000000000001") + b"}",
        b"[1, 2]", b"null", b"", b"{", b'{"transactionId": "t1"} trailing',
    ]
    accepted = _accepted_alike("transaction", raws, monkeypatch)
    assert 500 < len(accepted) < len(raws) - 500, "both paths' outcomes are covered"
    assert all(type(t.amount) is float and (t.lat is None or type(t.lat) is float)
               for t in accepted)


PAGEVIEW_FIELD_VALUES = {  # the first two of each valid
    "sessionId": ["s1", "\u00e9", "", None, 3, True],
    "page": ["/a", "", None, 1],
    "timestamp": [1_700_000_000_000, 946_684_800_000, 2**63 - 1, 946_684_799_999, 2**63,
                  1.7e12, 1.5, "1", True, None],
    "userId": ["u1", "", None, ..., 3, False],
    "referrer": [..., None, "r", "", 2.5, ["r"]],
    "userAgent": [..., "Mozilla", 7],
}


def test_the_plain_pageview_path_decodes_exactly_as_the_field_checks(monkeypatch):
    import random

    rng = random.Random(9)
    fields = list(PAGEVIEW_FIELD_VALUES)
    raws = []
    for _ in range(4000):
        case = {f: rng.choice(PAGEVIEW_FIELD_VALUES[f][:2] if rng.random() < 0.85
                              else PAGEVIEW_FIELD_VALUES[f]) for f in fields}
        raws.append(json.dumps({k: v for k, v in case.items() if v is not ...}).encode())
    raws += [b'{"sessionId": "s", "page": "/", "timestamp": 1700000000000, "sessionId": "t"}',
             b'{"sessionId": "\\ud800", "page": "/", "timestamp": 1700000000000}', b"[]", b""]
    accepted = _accepted_alike("pageview", raws, monkeypatch)
    assert 500 < len(accepted) < len(raws) - 500, "both paths' outcomes are covered"
