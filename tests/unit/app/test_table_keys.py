"""weir_table_keys: RocksDB's key estimate per active partition, without Faust's offset key."""

from types import SimpleNamespace

import rocksdict

from app.monitoring import table_keys

OFFSET_KEY = b"__faust\0offset__"


def raw_db(path):
    return rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))


def test_keys_are_counted_from_the_estimate_of_each_active_partition(tmp_path):
    dbs = [raw_db(tmp_path / "p0"), raw_db(tmp_path / "p1")]
    try:
        for i in range(1000):
            dbs[0].put(f"k{i}".encode(), b"v")
        dbs[0].put(OFFSET_KEY, b"999")  # Faust's own bookkeeping: not a key of the table
        for i in range(10):
            dbs[1].put(f"j{i}".encode(), b"v")
        del dbs[1][b"j3"]
        data = SimpleNamespace(use_rocksdict=True, offset_key=OFFSET_KEY,
                               _dbs_for_actives=lambda: iter(dbs))
        table = SimpleNamespace(data=data)
        exact = sum(1 for db in dbs for key in db.keys() if key != OFFSET_KEY)
        assert table_keys(table) == exact == 1009
    finally:
        for db in dbs:
            db.close()


def test_other_stores_are_counted_by_faust():

    class Table:
        data = SimpleNamespace()

        def __len__(self):
            return 7

    assert table_keys(Table()) == 7
