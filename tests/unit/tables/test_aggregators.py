"""Aggregators: folding values one by one equals merging partial accumulators."""

from hypothesis import given, strategies as st

from tables.aggregators import Count, Distinct, Fields, FirstAndLast, Frequencies

names = st.sampled_from(["a", "b", "c", "d", None])


def fold(agg, values):
    acc = agg.zero()
    for v in values:
        agg.add(acc, v)
    return acc


@given(st.lists(st.tuples(names, names)), st.integers(0, 30))
def test_merging_partials_equals_folding_everything(values, cut):
    agg = Fields(Count(), Distinct(), Frequencies())
    rows = [[None, a, b] for a, b in values]
    left, right = fold(agg, rows[:cut]), fold(agg, rows[cut:])
    agg.merge(left, right)
    assert left == fold(agg, rows)


def test_top_ranks_by_count_then_name_and_skips_none():
    acc = fold(Frequencies(), ["b", "a", "c", "b", "a", None, None, "d"])
    assert Frequencies.top(acc, 3) == [("a", 2), ("b", 2), ("c", 1)]


def test_distinct_counts_each_value_once():
    acc = fold(Distinct(), ["x", "y", "x", None])
    assert Distinct.size(acc) == 2


@given(st.lists(st.tuples(st.integers(0, 5), st.text(max_size=2)), min_size=1),
       st.integers(0, 10))
def test_first_and_last_follow_the_ordering_key_whatever_the_arrival_order(values, cut):
    keyed = [([ts, i], payload) for i, (ts, payload) in enumerate(values)]
    agg = FirstAndLast()
    left, right = fold(agg, keyed[cut:]), fold(agg, keyed[:cut])  # later half first
    agg.merge(left, right)
    first = min(keyed, key=lambda kv: kv[0])
    last = max(keyed, key=lambda kv: kv[0])
    assert (left[0], left[1], left[2], left[3]) == (first[0], first[1], last[0], last[1])
