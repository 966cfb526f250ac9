import os

import pytest

from agent.errors import StoreLocked, RecordTooLarge, StoreCorrupt
from agent.store import Store, BlobCorrupt
from agent.store.arena import class_for, HSIZE


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
    s.lock.release()
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


def test_records_past_the_largest_slot_live_in_big_files_up_to_16_mib(tmp_path):
    """Past the largest arena slot a record moves to store/big/KID, back to an
    arena when it shrinks; it survives a clean reopen and a crash; past 16 MiB
    it is refused and nothing changes."""
    from agent.store.big import MAX_RECORD
    from agent.store.keyindex import BIG
    big, huge = b"b" * 100_000, b"h" * (MAX_RECORD - 64)
    with Store(str(tmp_path)) as s:
        s.save("small", b"x", True)
        s.save("grows", b"g" * 100, True)
        s.save("grows", big, True)                      # arena -> big file
        s.save("huge", huge, False)
        assert s.keys.location(s.keys.find(b"grows")) == (BIG, 0)
        assert s.load("grows") == big and s.load("huge") == huge
        assert [k for k, _ in s.scan("")] == ["grows", "small"]   # huge is not visible
        with pytest.raises(RecordTooLarge):
            s.save("small", b"x" * (MAX_RECORD + 1), True)
        assert s.load("small") == b"x"
    s = Store(str(tmp_path))                             # a clean reopen
    assert s.was_clean
    assert s.load("grows") == big and s.load("huge") == huge and s.count() == 2
    s.save("grows", b"shrunk", True)                     # big file -> arena, file removed
    assert s.load("grows") == b"shrunk"
    s.save("small", big + b"!", True)
    s.keys.flush()
    for a in s.arenas:
        if a:
            a.flush()
    s.lock.release()                                     # a crash: no close
    s = Store(str(tmp_path))
    assert not s.was_clean and not s.damaged
    assert s.load("small") == big + b"!" and s.load("huge") == huge
    assert s.load("grows") == b"shrunk" and s.count() == 2
    assert sorted(os.listdir(os.path.join(str(tmp_path), "big"))) == sorted(
        str(s.keys.find(k)) for k in (b"small", b"huge"))
    s.close()


def test_a_damaged_big_file_is_reported_not_returned(tmp_path):
    with Store(str(tmp_path)) as s:
        s.save("a", b"z" * 50_000, True)
        path = os.path.join(str(tmp_path), "big", str(s.keys.find(b"a")))
        with open(path, "r+b") as f:
            f.seek(30_000)
            f.write(b"Z")
        with pytest.raises(BlobCorrupt):
            s.load("a")
        os.unlink(path)
        with pytest.raises(BlobCorrupt):
            s.load("a")


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


def test_no_python_memory_per_record(tmp_path):
    """The store holds records in mmap arenas, not Python containers:
    tracemalloc sees every Python allocation, bytes and str included (a
    count of gc-tracked objects would miss those)."""
    import gc
    import tracemalloc
    with Store(str(tmp_path)) as s:
        for i in range(200):
            s.save("warm%05d" % i, b"value", True)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            for i in range(3000):
                s.save("k%05d" % i, b"value", True)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
        assert grown < 3000 * 4, "%.1f bytes of Python heap per record" % (grown / 3000)


def _entry_offset(s, key):
    from agent.store.keyindex import HDR_SIZE, ESIZE
    return HDR_SIZE + s.keys.find(key.encode()) * ESIZE


def test_a_torn_key_table_entry_is_found_after_a_crash_and_its_record_rebuilt(tmp_path):
    """A write torn inside a key-table entry (its location bytes, as a kill in
    the middle of set_location leaves them) is caught by the entry's CRC; the
    key is confirmed by the hash and its record rebuilt from the log."""
    from agent.node import Node, init_identity
    d = str(tmp_path / "n")
    init_identity(d)
    n = Node(d)
    for i in range(50):
        n.put("k%02d" % i, {"v": i})
    n.checkpoint()
    n.put("k07", {"w": "x" * 300})  # moves k07 to a bigger slot class
    off = _entry_offset(n.store, "k07")
    n.store.keys.tab.mm[off + 6:off + 11] = b"\x03\x00\x09\x00\x00"  # half a new location
    n.log.close()
    n.store._release()  # the process dies here: no close
    with Node(d) as m:
        assert m.get("k07") == {"v": 7, "w": "x" * 300}
        assert all(m.get("k%02d" % i) == {"v": i} for i in range(50) if i != 7)
        assert any("rebuilt 1 damaged record" in e for e in m.events)


def test_a_flipped_hash_block_is_rebuilt_not_a_silent_miss(tmp_path):
    with Store(str(tmp_path)) as s:
        for i in range(300):
            s.save("key%03d" % i, b"v%d" % i, True)
    with open(tmp_path / "keys.hash", "r+b") as f:
        data = bytearray(f.read())
        for off in range(0, len(data), 512):  # flip a bucket byte in every used block
            if any(data[off:off + 504]):
                data[off + 5] ^= 0x40  # the key-hash half of the first bucket
        f.seek(0)
        f.write(data)
    with Store(str(tmp_path)) as s:
        assert all(s.load("key%03d" % i) == b"v%d" % i for i in range(300))
        assert s.load("absent") is None


def test_a_flipped_visible_flag_fails_the_slot_check(tmp_path):
    with Store(str(tmp_path)) as s:
        s.save("a", b"hello", True)
        cls, slot = s.keys.location(s.keys.find(b"a"))
        arena = s.arenas[cls]
        arena.file.mm[slot * arena.size + 9] ^= 0x80  # the visible bit of the length
        with pytest.raises(BlobCorrupt):
            s.load("a")


def test_a_freed_slot_never_passes_for_the_record(tmp_path):
    """A record that moved leaves its old slot with a zeroed header, so a
    location pointing back there (a flipped byte) fails instead of giving the
    old value."""
    with Store(str(tmp_path)) as s:
        s.save("a", b"old", True)
        kid = s.keys.find(b"a")
        old = s.keys.location(kid)
        s.save("a", b"new" * 40, True)
        assert s.keys.location(kid) != old
        s.keys.set_location(kid, *old)
        with pytest.raises(BlobCorrupt):
            s.load("a")


def test_a_truncated_file_is_named_before_opening_it_could_hide_the_cut(tmp_path):
    """Files only grow; one shorter than at the last checkpoint was cut. A
    writer's open would pad it with zeros, so the check comes first."""
    with Store(str(tmp_path)) as s:
        for i in range(200):
            s.save("k%03d" % i, b"x" * 20, True)
        cls, slot = s.keys.location(s.keys.find(b"k199"))
        name = "arena.%d" % s.arenas[cls].size
    for victim in (name, "keys.heap"):
        with open(tmp_path / victim, "r+b") as f:
            f.truncate(64)
        with pytest.raises(StoreCorrupt, match=victim):
            Store(str(tmp_path))
