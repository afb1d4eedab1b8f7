import pytest

from tables.errors import ConfigError
from tables.state import InMemoryStore
from tables.ttl import TtlState


def test_key_expires_when_watermark_reaches_touched_plus_ttl():
    state = TtlState(60_000, InMemoryStore())
    state.put(0, "user-1", {"city": "Oslo"}, ts_ms=10_000)
    assert state.expire(0, 69_999) == []
    assert state.get(0, "user-1") == {"city": "Oslo"}
    assert state.expire(0, 70_000) == ["user-1"]
    assert state.get(0, "user-1") is None


def test_touching_a_key_again_extends_its_life_from_the_newest_event_time():
    state = TtlState(60_000, InMemoryStore())
    state.put(0, "k", 1, ts_ms=10_000)
    state.put(0, "k", 2, ts_ms=50_000)
    state.put(0, "k", 3, ts_ms=20_000)  # out of order: does not shorten it
    assert state.expire(0, 100_000) == []
    assert state.expire(0, 110_000) == ["k"] and len(state) == 0


def test_expired_keys_are_deleted_from_the_store_with_tombstones():
    store = InMemoryStore()
    state = TtlState(1_000, store)
    state.put(0, "a", 1, ts_ms=0)
    state.put(0, "b", 1, ts_ms=5_000)
    state.flush(0)
    assert set(store.entries[0]) == {"a", "b"}
    state.expire(0, 2_000)
    state.flush(0)
    assert set(store.entries[0]) == {"b"}


def test_restarted_state_reindexes_expiry_from_the_store():
    store = InMemoryStore()
    state = TtlState(1_000, store)
    state.put(3, "a", "x", ts_ms=100)
    state.flush(3)
    restarted = TtlState(1_000, store)
    assert restarted.get(3, "a") == "x"
    assert restarted.expire(3, 1_100) == ["a"]


@pytest.mark.parametrize("bad", [0, -5, 1.5, None])
def test_ttl_must_be_positive_and_names_the_setting(bad):
    with pytest.raises(ConfigError, match="WEIR_FRAUD_DEDUP_TTL_MS"):
        TtlState(bad, InMemoryStore(), setting="WEIR_FRAUD_DEDUP_TTL_MS")


def test_stored_entries_carry_value_and_touched_time_and_load_through_load_value():
    store = InMemoryStore()
    state = TtlState(1_000, store)
    state.put(0, "a", (1, 2), ts_ms=100)
    state.flush(0)
    assert store.entries[0]["a"] == ((1, 2), 100)
    restarted = TtlState(1_000, store, load_value=lambda v: ("loaded", v))
    assert restarted.get(0, "a") == ("loaded", (1, 2))
    assert restarted.expire(0, 1_099) == [] and restarted.expire(0, 1_100) == ["a"]


def test_entries_stored_by_earlier_versions_as_objects_load_too():
    store = InMemoryStore()
    store.entries[0] = {"a": {"v": [1, 2], "t": 100}, "b": [[3], 200]}
    state = TtlState(1_000, store, load_value=tuple)
    assert state.get(0, "a") == (1, 2) and state.get(0, "b") == (3,)
    assert state.expire(0, 1_100) == ["a"] and state.expire(0, 1_200) == ["b"]


def test_a_key_written_many_times_holds_one_expiry_entry_and_expires_from_its_last_touch():
    state = TtlState(1_000, InMemoryStore())
    for ts in range(0, 100_000, 10):  # 10,000 writes of one key
        state.put(0, "k", ts, ts_ms=ts)
    assert len(state.view(0).expiry) == 1
    assert state.expire(0, 100_989) == [] and state.get(0, "k") == 99_990
    assert state.expire(0, 100_990) == ["k"]


def test_a_deleted_key_written_again_expires_once_from_its_new_touch():
    state = TtlState(1_000, InMemoryStore())
    state.put(0, "k", 1, ts_ms=0)
    state.delete(0, "k")
    state.put(0, "k", 2, ts_ms=500)
    assert state.expire(0, 1_000) == [] and state.get(0, "k") == 2
    assert state.expire(0, 1_500) == ["k"] and state.expire(0, 5_000) == []
