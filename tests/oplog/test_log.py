import os

import pytest

from agent.errors import LogError
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


def test_entry_with_bad_crc_ends_the_log(tmp_path):
    log = OpLog(str(tmp_path))
    log.recover()
    log.append(b"good")
    pos = log.append(b"flipped")
    log.close()
    seg = os.path.join(str(tmp_path), "%08d.seg" % pos[0])
    with open(seg, "r+b") as f:
        f.seek(pos[1] + 9)
        f.write(b"X")
    log = OpLog(str(tmp_path))
    assert [p for _, p in log.recover()] == [b"good"]
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


def test_damage_in_an_older_segment_is_a_typed_error(tmp_path):
    log = OpLog(str(tmp_path), segment_max=64)
    log.recover()
    for i in range(6):
        log.append(b"y" * 30)
    log.close()
    first = os.path.join(str(tmp_path), "00000001.seg")
    with open(first, "r+b") as f:
        f.seek(12)
        f.write(b"Z")
    with pytest.raises(LogError):
        OpLog(str(tmp_path)).recover()


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
