from app import machine_probe


def test_the_workload_is_the_same_every_time():
    # the reading compares moments only if every probe does the same work
    n = machine_probe.TABLE_ENTRIES
    assert machine_probe._workload() == machine_probe._workload() == (
        997 + machine_probe.RECORDS + n * (n - 1) // 2)


def test_the_reading_is_the_fastest_round_in_cpu_milliseconds(monkeypatch):
    ticks = iter([0.0, 0.030, 1.0, 1.020, 2.0, 2.050])
    monkeypatch.setattr(machine_probe.time, "thread_time", lambda: next(ticks))
    monkeypatch.setattr(machine_probe, "_workload", lambda: 0)
    assert round(machine_probe.probe(rounds=3), 6) == 20.0
