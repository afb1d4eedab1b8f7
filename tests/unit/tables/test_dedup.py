import pytest

from tables.dedup import SeenIds
from tables.errors import ConfigError
from tables.state import InMemoryStore


def test_second_delivery_of_an_id_is_a_duplicate():
    seen = SeenIds(300_000, InMemoryStore())
    assert seen.first_delivery(0, "o-1", 10_000)
    assert not seen.first_delivery(0, "o-1", 10_000)
    assert seen.first_delivery(1, "o-1", 10_000)  # partitions are apart


def test_id_is_forgotten_once_the_watermark_passes_its_bucket_end_plus_ttl():
    seen = SeenIds(1_000, InMemoryStore(), bucket_ms=1_000)
    seen.first_delivery(0, "o-1", 10_200)  # bucket [10 s, 11 s)
    seen.expire(0, 11_999)
    assert not seen.first_delivery(0, "o-1", 10_200)
    seen.expire(0, 12_000)
    assert seen.first_delivery(0, "o-1", 10_200)


def test_ids_survive_a_restart_through_the_store():
    store = InMemoryStore()
    seen = SeenIds(60_000, store)
    seen.first_delivery(0, "o-1", 10_000)
    seen.flush(0, tag=1)
    seen.first_delivery(0, "o-2", 10_500)  # same bucket, next batch
    seen.flush(0, tag=2)
    restarted = SeenIds(60_000, store)
    assert not restarted.first_delivery(0, "o-1", 10_000)
    assert not restarted.first_delivery(0, "o-2", 10_500)
    assert restarted.first_delivery(0, "o-3", 10_000)


def test_state_is_one_entry_per_batch_and_bucket_and_forgetting_deletes_them():
    store = InMemoryStore()
    seen = SeenIds(5_000, store, bucket_ms=1_000)
    for i in range(100):
        seen.first_delivery(0, f"o-{i}", 20_000 + i * 15)  # buckets 20 s and 21 s
    seen.flush(0, tag=100)
    assert sorted(store.entries[0]) == ["20000|100", "21000|100"]
    seen.expire(0, 26_000)  # bucket 20 s ends at 21 s, + ttl 5 s
    seen.flush(0, tag=101)
    assert sorted(store.entries[0]) == ["21000|100"]
    assert len(seen) == 100 - 67


def test_zero_ttl_turns_deduplication_off():
    store = InMemoryStore()
    seen = SeenIds(0, store)
    assert not seen.enabled
    assert seen.first_delivery(0, "o-1", 1) and seen.first_delivery(0, "o-1", 1)
    seen.flush(0, tag=1)
    assert store.entries == {} and len(seen) == 0


def test_negative_ttl_names_the_setting():
    with pytest.raises(ConfigError, match="WEIR_DEDUP_TTL_MS"):
        SeenIds(-1, InMemoryStore(), "WEIR_DEDUP_TTL_MS")
