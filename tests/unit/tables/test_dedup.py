import pytest

from tables.dedup import SeenIds
from tables.errors import ConfigError
from tables.state import InMemoryStore


def test_second_delivery_of_an_id_is_a_duplicate():
    seen = SeenIds(300_000, InMemoryStore())
    assert seen.first_delivery(0, "o-1", 10_000)
    assert not seen.first_delivery(0, "o-1", 10_000)
    assert seen.first_delivery(1, "o-1", 10_000)  # partitions are apart


def test_id_is_forgotten_once_the_watermark_passes_its_time_plus_ttl():
    seen = SeenIds(1_000, InMemoryStore())
    seen.first_delivery(0, "o-1", 10_000)
    seen.expire(0, 10_999)
    assert not seen.first_delivery(0, "o-1", 10_000)
    seen.expire(0, 11_000)
    assert seen.first_delivery(0, "o-1", 10_000)


def test_ids_survive_a_restart_through_the_store():
    store = InMemoryStore()
    seen = SeenIds(60_000, store)
    seen.first_delivery(0, "o-1", 10_000)
    seen.flush(0)
    restarted = SeenIds(60_000, store)
    assert not restarted.first_delivery(0, "o-1", 10_000)
    assert restarted.first_delivery(0, "o-2", 10_000)


def test_zero_ttl_turns_deduplication_off():
    store = InMemoryStore()
    seen = SeenIds(0, store)
    assert not seen.enabled
    assert seen.first_delivery(0, "o-1", 1) and seen.first_delivery(0, "o-1", 1)
    seen.flush(0)
    assert store.entries == {} and len(seen) == 0


def test_negative_ttl_names_the_setting():
    with pytest.raises(ConfigError, match="WEIR_DEDUP_TTL_MS"):
        SeenIds(-1, InMemoryStore(), "WEIR_DEDUP_TTL_MS")
