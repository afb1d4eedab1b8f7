"""The offline oracles of `weir bench`'s close latency: percentiles, the record that moved
a partition's watermark, the one that closed a window across partitions."""

import orjson

from app.bench_latency import (Record, WatermarkIndex, close_latencies, closed_windows,
                               percentile, stages, summarize, watermark_sent)


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7], 99) == 7
    assert percentile([1, 2, 3], 50) == 2


def test_summary_sorts_and_reports_the_max_and_count():
    s = summarize([30, 10, 20])
    assert (s.count, s.p50_ms, s.p99_ms, s.max_ms) == (3, 20, 30, 30)


def test_summary_of_nothing_has_no_figures():
    assert summarize([]).count == 0 and summarize([]).p99_ms is None


def test_watermark_is_reached_by_the_first_record_past_it_and_never_goes_back():
    index = WatermarkIndex({0: [(5, 100), (30, 101), (20, 102), (41, 103)]}, delay_ms=10)
    assert index.reaching(0, 20) == 1
    assert index.reaching(0, 21) == 3  # the late 20 does not move it
    assert index.append_reaching(0, 31) == 103
    assert index.reaching(0, 32) is None


def test_window_closes_with_the_last_partition_to_pass_its_end():
    # partition 0 passes 60 at its 2nd record (appended 200), partition 1 at its 1st (300)
    index = WatermarkIndex({0: [(50, 100), (70, 200), (90, 400)],
                            1: [(65, 300), (80, 350)]}, delay_ms=5)
    assert index.closing_append(60) == 300
    assert index.closing_append(75) == 400  # p0 at 90 (400), p1 at 80 (350)


def test_window_is_not_closed_while_a_partition_has_not_passed_it():
    index = WatermarkIndex({0: [(100, 1)], 1: [(10, 2)]}, delay_ms=0)
    assert index.closing_append(50) is None


def order_log(events):
    return {p: [Record(p, i, append, None, orjson.dumps({"timestamp": ts}))
                for i, (ts, append) in enumerate(recs)] for p, recs in events.items()}


def result(start, orders, append, seen, revision=0):
    return Record(0, 0, append, None, orjson.dumps({"windowStart": start, "totalOrders": orders,
                                                    "revision": revision}), seen)


def test_closed_windows_count_their_orders_and_know_their_closing_append():
    events = {0: [(1_000, 10), (1_500, 11), (2_300, 12)], 1: [(1_100, 10), (2_200, 13)]}
    closed = closed_windows(events, delay_ms=100, window_ms=1_000)
    assert closed == {1_000: (3, 13)}  # [2000, 3000) is still open


def test_latency_runs_from_the_closing_input_to_the_result():
    closed = {1_000: (3, 13)}
    to_append, to_visible, correct = close_latencies(closed, [result(1_000, 3, 40, 55)])
    assert (to_append, to_visible, correct) == ([27], [42], True)


def test_a_wrong_count_a_missing_window_or_a_duplicate_is_not_correct():
    closed = {1_000: (3, 13), 2_000: (1, 20)}
    assert not close_latencies(closed, [result(1_000, 3, 40, 55)])[2]
    assert not close_latencies(closed, [result(1_000, 2, 40, 55), result(2_000, 1, 50, 60)])[2]
    twice = [result(1_000, 3, 40, 55), result(1_000, 3, 41, 56), result(2_000, 1, 50, 60)]
    assert not close_latencies(closed, twice)[2]
    assert close_latencies(closed, twice[:1] + twice[2:])[2]


def test_later_revisions_are_not_latency_samples():
    to_append, _, correct = close_latencies({1_000: (3, 13)}, [result(1_000, 3, 40, 55),
                                                               result(1_000, 4, 90, 95, 1)])
    assert to_append == [27] and correct


def wm(partition, watermark, view="orders-totals"):
    return {"view": view, "kind": "watermark", "partition": partition, "watermarkMs": watermark}


def test_merge_hears_of_a_watermark_from_the_last_partition_to_report_it():
    partials = [(100, wm(0, 50)), (110, wm(1, 60)), (120, wm(0, 70)), (130, wm(1, 65)),
                (140, wm(0, 90, view="other"))]
    assert watermark_sent(partials, "orders-totals", 2, 60) == 120
    assert watermark_sent(partials, "orders-totals", 2, 66) is None
    assert watermark_sent(partials, "orders-totals", 3, 60) is None


def test_stages_split_the_latency_at_the_watermark_sent_to_the_merge():
    partials = [(20, wm(0, 2_000)), (25, wm(1, 2_000))]
    split = stages({1_000: (3, 13)}, [result(1_000, 3, 40, 55)], partials, "orders-totals", 2,
                   1_000)
    assert split == {1_000: (12, 15)}


def test_the_printed_verdict_follows_the_p99_target():
    from app.bench_latency import CloseLatencyResult, close_latency_lines

    def lines(p99):
        fast = summarize([10, p99])
        return close_latency_lines(CloseLatencyResult(10_000, 9_990, 30, 1_000, 200, 2, True,
                                                      fast, fast, fast, fast))

    assert "meets the p99 < 100 ms target" in lines(99)
    assert "misses the p99 < 100 ms target" in lines(100)
