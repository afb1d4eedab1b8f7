from tables.state import InMemoryStore, SourceOffsets


def test_source_offsets_resume_after_a_restart_and_recognise_replays():
    store = InMemoryStore()
    offsets = SourceOffsets(store)
    assert offsets.clock(2).next_offset == 0
    offsets.clock(2).advance_to(17)
    offsets.save(2)
    restarted = SourceOffsets(store)
    assert restarted.clock(2).is_replay(16) and not restarted.clock(2).is_replay(17)
    assert restarted.clock(3).next_offset == 0 and store.entries[2] == {}
