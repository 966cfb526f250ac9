import os

import pytest

from agent.oplog.log import OpLog


def entries(log, start=(0, 0)):
    return [p for _, p in log.read(start)]


def test_appended_entries_read_back_in_order(tmp_path):
    log = OpLog(str(tmp_path), durable=True)
    log.recover()
    for i in range(10):
        log.append(b"change-%d" % i)
    log.commit()
    assert entries(log) == [b"change-%d" % i for i in range(10)]
    log.close()


def test_torn_tail_is_truncated_not_fatal(tmp_path):
    log = OpLog(str(tmp_path))
    log.recover()
    log.append(b"one")
    log.append(b"two")
    log.close()
    seg = os.path.join(str(tmp_path), sorted(os.listdir(str(tmp_path)))[0])
    with open(seg, "ab") as f:
        f.write(b"\x40\x00\x00\x00\x01\x02")  # a header promising 64 bytes, then nothing
    log = OpLog(str(tmp_path))
    found = log.recover()
    assert [p for _, p in found] == [b"one", b"two"]
    assert log.truncated == 6
    log.append(b"three")
    log.close()
    log = OpLog(str(tmp_path))
    assert [p for _, p in log.recover()] == [b"one", b"two", b"three"]
    log.close()


def test_a_damaged_entry_is_reported_and_skipped_and_later_ones_stay_readable(tmp_path):
    log = OpLog(str(tmp_path))
    log.recover()
    log.append(b"good")
    pos = log.append(b"flipped")
    log.append(b"after")
    log.close()
    seg = os.path.join(str(tmp_path), "%08d.seg" % pos[0])
    with open(seg, "r+b") as f:
        f.seek(pos[1] + 14)
        f.write(b"X")
    size = os.path.getsize(seg)
    log = OpLog(str(tmp_path))
    seen = []
    log.on_damage = lambda path, start, end: seen.append((path, start, end))
    assert [p for _, p in log.recover()] == [b"good", b"after"]
    assert seen == [(seg, pos[1], pos[1] + 12 + len(b"flipped"))]
    assert os.path.getsize(seg) == size  # middle damage is never truncated
    log.append(b"new")
    log.close()
    log = OpLog(str(tmp_path))
    assert [p for _, p in log.recover()] == [b"good", b"after", b"new"]
    assert log.damaged_bytes() == 12 + len(b"flipped")
    log.close()


def test_a_flipped_length_does_not_hide_the_entries_after_it(tmp_path):
    log = OpLog(str(tmp_path))
    log.recover()
    pos = [log.append(b"e%03d" % i * 20) for i in range(50)]
    log.close()
    seg = os.path.join(str(tmp_path), "%08d.seg" % pos[5][0])
    with open(seg, "r+b") as f:
        f.seek(pos[5][1] + 7)  # the high byte of entry 5's length
        f.write(b"\x7f")
    log = OpLog(str(tmp_path))
    got = [p for _, p in log.recover()]
    assert got == [b"e%03d" % i * 20 for i in range(50) if i != 5]
    log.close()


def test_a_short_write_is_cut_back_before_the_error_and_the_next_append_starts_there(tmp_path):
    from agent import fs
    from agent.errors import DiskFull
    from tests.errorfs import FaultyFS
    log = OpLog(str(tmp_path), durable=True)
    log.recover()
    log.append(b"one")
    log.commit()
    end = log.end()
    faulty = FaultyFS()
    faulty.fail("write", "*.seg", errno_name="ENOSPC", short=5)
    old = fs.install(faulty)
    try:
        with pytest.raises(DiskFull):
            log.append(b"two" * 10)
    finally:
        fs.install(old)
    assert log.end() == end and os.path.getsize(log.path(end[0])) == end[1]
    log.append(b"three")
    log.commit()
    log.close()
    log = OpLog(str(tmp_path))
    assert [p for _, p in log.recover()] == [b"one", b"three"] and log.truncated == 0
    log.close()


def test_a_segment_appears_whole_or_not_at_all(tmp_path):
    """A kill between creating a segment and writing its header leaves only
    a temp file, which the next open removes."""
    log = OpLog(str(tmp_path), segment_max=64)
    log.recover()
    log.append(b"x" * 40)
    log.close()
    with open(os.path.join(str(tmp_path), "00000002.seg.tmp"), "wb"):
        pass  # the half-made next segment
    log = OpLog(str(tmp_path), segment_max=64)
    assert [p for _, p in log.recover()] == [b"x" * 40]
    assert sorted(os.listdir(str(tmp_path))) == ["00000001.seg"]
    log.append(b"y" * 40)  # rolls into a whole 00000002.seg
    log.close()
    log = OpLog(str(tmp_path))
    assert [p for _, p in log.recover()] == [b"x" * 40, b"y" * 40] and not log.damage
    log.close()


def test_recover_from_a_checkpoint_returns_only_the_tail(tmp_path):
    log = OpLog(str(tmp_path))
    log.recover()
    log.append(b"a")
    mark = log.end()
    log.append(b"b")
    log.close()
    log = OpLog(str(tmp_path))
    assert [p for _, p in log.recover(mark)] == [b"b"]
    log.close()


def test_segments_roll_over(tmp_path):
    log = OpLog(str(tmp_path), segment_max=64)
    log.recover()
    for i in range(10):
        log.append(b"x" * 30)
    log.close()
    assert len(os.listdir(str(tmp_path))) > 3
    log = OpLog(str(tmp_path))
    assert len(log.recover()) == 10
    log.close()


def test_damage_in_an_older_segment_is_skipped_not_fatal(tmp_path):
    log = OpLog(str(tmp_path), segment_max=64)
    log.recover()
    for i in range(6):
        log.append(b"y%d" % i * 15)
    log.close()
    first = os.path.join(str(tmp_path), "00000001.seg")
    with open(first, "r+b") as f:
        f.seek(20)
        f.write(b"Z")
    log = OpLog(str(tmp_path), segment_max=64)
    got = [p for _, p in log.recover()]
    assert len(got) == 5 and b"y0" * 15 not in got and log.damage
    log.close()


def test_a_version_1_log_is_still_read_and_appends_go_to_a_new_segment(tmp_path):
    import struct
    import zlib
    seg = os.path.join(str(tmp_path), "00000001.seg")
    with open(seg, "wb") as f:
        f.write(b"MYCL\x01")
        for p in (b"old-1", b"old-2"):
            f.write(struct.pack("<II", len(p), zlib.crc32(p)) + p)
    log = OpLog(str(tmp_path))
    assert [p for _, p in log.recover()] == [b"old-1", b"old-2"]
    log.append(b"new")
    log.close()
    assert sorted(os.listdir(str(tmp_path))) == ["00000001.seg", "00000002.seg"]
    log = OpLog(str(tmp_path))
    assert [p for _, p in log.recover()] == [b"old-1", b"old-2", b"new"]
    log.close()


def test_relaxed_mode_flushes_in_the_background(tmp_path):
    import time
    log = OpLog(str(tmp_path), durable=False, interval_ms=10)
    log.recover()
    log.append(b"x")
    deadline = time.time() + 2
    while log.synced < log.written and time.time() < deadline:
        time.sleep(0.01)
    assert log.synced == log.written
    log.close()


def test_a_failed_fsync_in_durable_mode_cuts_the_entry_back(tmp_path):
    """In durable mode an append is acknowledged only by commit(): if the
    fsync fails, the entry never happened (it must not turn up later)."""
    from agent import fs
    from agent.errors import DiskFull
    from tests.errorfs import FaultyFS
    log = OpLog(str(tmp_path), durable=True)
    log.recover()
    log.append(b"kept")
    log.commit()
    faulty = FaultyFS()
    faulty.fail("fdatasync", "*.seg", errno_name="ENOSPC")
    old = fs.install(faulty)
    try:
        log.append(b"refused")
        with pytest.raises(DiskFull):
            log.commit()
    finally:
        fs.install(old)
    log.append(b"next")
    log.commit()
    log.close()
    log = OpLog(str(tmp_path))
    assert [p for _, p in log.recover()] == [b"kept", b"next"]
    log.close()
