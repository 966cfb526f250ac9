import os

import pytest

from agent.errors import StoreLocked, RecordTooLarge, StoreCorrupt
from agent.store import Store, BlobCorrupt
from agent.store.arena import SIZE_CLASSES, class_for, HSIZE


def test_put_get_round_trip_and_overwrite_moves_between_size_classes(tmp_path):
    with Store(str(tmp_path)) as s:
        s.save("a", b"\x01" * 10, True)
        assert s.load("a") == b"\x01" * 10
        s.save("a", b"\x02" * 300, True)
        assert s.load("a") == b"\x02" * 300
        s.save("b", b"\x03", False)
        assert s.load("b") == b"\x03"
        assert s.load("missing") is None
        assert s.count() == 1


def test_freed_slots_are_reused(tmp_path):
    with Store(str(tmp_path)) as s:
        for i in range(100):
            s.save("k%d" % i, b"x" * 20, True)
        arena = s.arenas[class_for(20)]
        used = arena.capacity - len(arena.free)
        for i in range(100):
            s.save("k%d" % i, b"y" * 20, True)  # copy on write, old slot freed
        assert arena.capacity - len(arena.free) == used


def test_reopen_after_clean_close_does_not_rebuild(tmp_path):
    with Store(str(tmp_path)) as s:
        for i in range(500):
            s.save("key:%04d" % i, bytes([i % 256]) * (i % 90 + 1), i % 3 != 0)
    with Store(str(tmp_path)) as s:
        assert s.was_clean and not s.damaged
        assert s.load("key:0042") == bytes([42]) * 43
        assert s.count() == sum(1 for i in range(500) if i % 3 != 0)
        assert [k for k, _ in s.scan("key:000")] == ["key:%04d" % i for i in range(1, 10) if i % 3]


def test_crash_rebuilds_bitmaps_from_the_key_table(tmp_path):
    s = Store(str(tmp_path))
    for i in range(200):
        s.save("k%03d" % i, b"v%d" % i, True)
    s.keys.flush()
    for a in s.arenas:
        if a:
            a.flush()
    # simulate a crash: no close(), lock released by the dying process
    os.close(s._lockfd)
    s2 = Store(str(tmp_path))
    assert not s2.was_clean
    assert s2.count() == 200 and s2.load("k123") == b"v123"
    s2.save("new", b"n", True)  # allocation works after the rebuild
    assert s2.load("k000") == b"v0"
    s2.close()


def test_blob_with_bad_checksum_is_reported_not_returned(tmp_path):
    with Store(str(tmp_path)) as s:
        s.save("a", b"hello world", True)
        cls, slot = s.keys.location(s.keys.find(b"a"))
        arena = s.arenas[cls]
        off = slot * arena.size + HSIZE
        arena.file.mm[off] ^= 0xFF
        with pytest.raises(BlobCorrupt):
            s.load("a")


def test_second_process_is_refused_with_store_locked(tmp_path):
    with Store(str(tmp_path)):
        with pytest.raises(StoreLocked):
            Store(str(tmp_path))


def test_record_larger_than_the_largest_class_is_refused(tmp_path):
    with Store(str(tmp_path)) as s:
        with pytest.raises(RecordTooLarge):
            s.save("big", b"x" * SIZE_CLASSES[-1], True)
        assert s.load("big") is None


def test_watch_sees_saves_under_its_prefix_only(tmp_path):
    with Store(str(tmp_path)) as s:
        seen = []
        w = s.watch("user:", lambda k, b: seen.append(k))
        s.save("user:1", b"a", True)
        s.save("item:1", b"b", True)
        w.cancel()
        s.save("user:2", b"c", True)
        assert seen == ["user:1"]


def test_hash_table_grows_and_finds_every_key(tmp_path):
    with Store(str(tmp_path)) as s:
        for i in range(5000):
            s.save("key-%d" % i, b"%d" % i, True)
        assert all(s.load("key-%d" % i) == b"%d" % i for i in range(0, 5000, 7))
        assert s.keys.nb >= 5000 * 10 // 7


def test_corrupt_meta_is_a_typed_error(tmp_path):
    with Store(str(tmp_path)) as s:
        s.save("a", b"x", True)
    with open(tmp_path / "meta", "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xff")
    with pytest.raises(StoreCorrupt):
        Store(str(tmp_path))


def test_no_python_object_per_record(tmp_path):
    """The store holds records in mmap arenas, not Python containers."""
    import gc
    with Store(str(tmp_path)) as s:
        gc.collect()
        before = len(gc.get_objects())
        for i in range(3000):
            s.save("k%05d" % i, b"value", True)
        gc.collect()
        assert len(gc.get_objects()) - before < 100
