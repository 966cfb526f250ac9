"""Compaction, snapshots and catch-up (agent/history/), in one process."""
import os
import shutil

import pytest

from agent.history.snapshot import Reader, SnapshotCorrupt
from agent.node import Node
from agent.values import Add, Inc, Remove
from agent.vector import Known

from tests.sync.helpers import make_node, pair, run, state

SEG = 16 << 10   # small segments, so a few hundred puts fill several


def _fill(n, count, prefix="k", keys=50):
    for i in range(count):
        n.put("%s%03d" % (prefix, i % keys), {"v": i, "c": Inc(1), "s": Add(i % 7)})
        if i % 3 == 0:
            n.put("%s%03d" % (prefix, i % keys), {"s": Remove((i - 3) % 7)})


def _full(node):
    """Every record with its kinds: what a reader sees, whole."""
    return {k: node.get(k, with_kinds=True) for k, _ in node.store.scan("")}


def test_known_ranges_cover_and_lack():
    k = Known.from_runs({7: [[1, 10], [20, 30]]})
    assert k.vv == {7: 30} and k.gaps == {7: [[11, 19]]}
    assert k.covers(7, 1, 10) and k.covers(7, 20, 30)
    assert not k.covers(7, 10, 11) and not k.covers(7, 25, 31) and not k.covers(8, 1, 1)
    peer = Known({7: 10})
    assert peer.lacks_any(k)                       # lacks 20..30
    assert not Known({7: 30}).lacks_any(k)
    assert not Known({7: 30}, {7: [[12, 18]]}).lacks_any(k)   # its gap lies in ours
    assert Known({7: 30}, {7: [[5, 6]]}).lacks_any(k)


def test_compaction_drops_the_log_and_a_reopened_node_reads_every_record(tmp_path):
    a = make_node(tmp_path / "a", segment_bytes=SEG)
    _fill(a, 600)
    before = _full(a)
    log_before = a.log.size()
    got = a.compact()
    assert got["segments_dropped"] >= 3, got
    assert a.log.size() < log_before / 3
    assert got["records"] == 50
    a.put("tail", {"v": 1})       # its prev lies in a dropped segment
    before = _full(a)
    a.close()
    b = Node(str(tmp_path / "a"), segment_bytes=SEG)
    try:
        assert _full(b) == before
        assert b.scan_log() == 0            # compacted history is not taken for lost changes
        assert b.known.missing() == 0
        assert b.known.missing() == 0
        b.put("k000", {"v": "after"})
        assert b.get("k000")["v"] == "after"
    finally:
        b.close()


def test_a_store_rebuilt_after_compaction_starts_from_the_snapshot(tmp_path):
    """Without the snapshot as its base a rebuild replays only the log
    left after compaction, and every older write is lost."""
    d = str(tmp_path / "a")
    a = make_node(d, segment_bytes=SEG)
    _fill(a, 600)
    a.compact()
    _fill(a, 90, prefix="t")            # a tail after the snapshot
    want = _full(a)
    a.close()
    shutil.rmtree(os.path.join(d, "store"))
    os.makedirs(os.path.join(d, "store"))
    open(os.path.join(d, "store", "meta"), "wb").write(b"garbage")
    b = Node(d, segment_bytes=SEG)
    try:
        assert any("rebuilt the store" in e for e in b.events), b.events
        assert _full(b) == want
        assert b.incomplete is None
    finally:
        b.close()


def test_a_damaged_record_after_compaction_is_repaired_from_snapshot_and_log(tmp_path):
    d = str(tmp_path / "a")
    a = make_node(d, segment_bytes=SEG)
    _fill(a, 600)
    a.compact()
    a.put("k001", {"v": "tail"})
    want = _full(a)
    kid = a.store.find(b"k001")
    a.repair({kid})
    assert _full(a) == want
    a.close()


def test_a_new_peer_catches_up_from_the_snapshot_then_the_tail(tmp_path):
    a = make_node(tmp_path / "a", segment_bytes=SEG)
    _fill(a, 600)
    a.compact()
    _fill(a, 40, prefix="t")
    b = make_node(tmp_path / "b", segment_bytes=SEG)
    b.put("b-own", {"v": 1, "s": Add("x")})
    b.put("k003", {"s": Add("from-b")})     # a record both wrote: joined, not replaced
    sa, sb = pair(a, b)
    evs = run(sa, sb)
    kinds = [e.kind for e in evs]
    assert "snapshot_sent" in kinds and "snapshot_taken" in kinds, kinds
    assert not sa.closed and not sb.closed, (sa.error, sb.error)
    assert state(a) == state(b)
    assert "from-b" in b.get("k003")["s"]
    assert not b.known.lacks_any(a.known) and not a.known.lacks_any(b.known)
    # the snapshot costs what the live state costs, not the history
    assert sa.stats["wire_out"] < a.log_index.log.size() + 64 * 1024 + sa.stats["snap_out"]
    # b holds the state durably: reopened, and rebuilt, it still has it
    b.close()
    b2 = Node(str(tmp_path / "b"), segment_bytes=SEG)
    try:
        assert state(b2) == state(a)
    finally:
        b2.close()


def test_a_peer_that_holds_the_history_gets_deltas_not_a_snapshot(tmp_path):
    a = make_node(tmp_path / "a", segment_bytes=SEG)
    b = make_node(tmp_path / "b", segment_bytes=SEG)
    _fill(a, 300)
    run(*pair(a, b))
    _fill(a, 300, prefix="m")
    a.compact()
    a.put("late", {"v": 1})
    sa, sb = pair(a, b)
    evs = run(sa, sb)
    assert "snapshot_sent" not in [e.kind for e in evs]
    assert state(a) == state(b)


def test_the_frontier_keeps_the_history_an_active_peer_lacks(tmp_path):
    a = make_node(tmp_path / "a", segment_bytes=SEG)
    b = make_node(tmp_path / "b", segment_bytes=SEG)
    b.put("x", {"v": 1})
    run(*pair(a, b))                 # a learns that b exists and holds nothing of a
    _fill(a, 600)
    got = a.compact()
    assert got["segments_dropped"] == 0 and got["held_back_by"] == ["dev-b"], got
    sa, sb = pair(a, b)
    evs = run(sa, sb)
    assert "snapshot_sent" not in [e.kind for e in evs]   # deltas: the log still has them
    assert state(a) == state(b)
    got = a.compact()                # b now holds it all
    assert got["segments_dropped"] >= 3, got


def test_a_peer_silent_past_the_retire_time_stops_holding_history(tmp_path):
    a = make_node(tmp_path / "a", segment_bytes=SEG)
    b = make_node(tmp_path / "b", segment_bytes=SEG)
    run(*pair(a, b))
    _fill(a, 600)
    a.frontier.retire_after = 0.0
    a.frontier.peers["dev-b"][0] -= 10
    got = a.compact()
    assert got["segments_dropped"] >= 3 and got["held_back_by"] == []
    assert a.stats()["peers_retired"] == ["dev-b"]
    sa, sb = pair(a, b)
    evs = run(sa, sb)
    assert "snapshot_sent" in [e.kind for e in evs]
    assert state(a) == state(b)


def test_a_session_starts_at_the_first_segment_the_peer_lacks(tmp_path):
    a = make_node(tmp_path / "a", segment_bytes=SEG)
    b = make_node(tmp_path / "b", segment_bytes=SEG)
    _fill(a, 900)
    run(*pair(a, b))
    a.put("new", {"v": 1})
    a.log.seal()
    start = a.log_start_for(b.known)
    assert start[0] == a.log.segments[-2], (start, a.log.segments)   # the new one only
    sa, sb = pair(a, b)
    run(sa, sb)
    assert b.get("new") == {"v": 1}


def test_a_damaged_snapshot_from_a_peer_changes_nothing(tmp_path):
    a = make_node(tmp_path / "a", segment_bytes=SEG)
    _fill(a, 600)
    a.compact()
    path = a.snapshot_path
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(SnapshotCorrupt):
        Reader(path).verify()
    b = make_node(tmp_path / "b", segment_bytes=SEG)
    b.put("mine", {"v": 1})
    before = _full(b), b.known.vv.copy()
    a.snapshot_sound = lambda: True          # a peer that sends it anyway
    sa, sb = pair(a, b)
    run(sa, sb)
    assert sb.closed and isinstance(sb.error, SnapshotCorrupt), sb.error
    assert (_full(b), b.known.vv) == before


@pytest.mark.parametrize("where", ["header", "middle", "gone"])
def test_a_new_peer_gets_everything_though_our_snapshot_is_damaged(tmp_path, where):
    """Our own snapshot rotted (or was removed): it is written again from
    the store before it is sent, so the new peer never gets the tail alone
    (which would leave it silently without the compacted history)."""
    a = make_node(tmp_path / "a", segment_bytes=SEG)
    _fill(a, 600)
    a.compact()
    _fill(a, 10, prefix="t")
    path = a.snapshot_path
    if where == "gone":
        os.unlink(path)
    else:
        data = bytearray(open(path, "rb").read())
        data[12 if where == "header" else len(data) // 2] ^= 0xFF
        open(path, "wb").write(bytes(data))
    a.close()
    a = Node(str(tmp_path / "a"), segment_bytes=SEG)      # as after a restart
    try:
        b = make_node(tmp_path / "b", segment_bytes=SEG)
        sa, sb = pair(a, b)
        run(sa, sb)
        assert not sb.closed or sb.error is None, sb.error
        assert state(b) == state(a) and len(state(b)) == 60
        assert not b.known.lacks_any(a.known)
        Reader(path).verify()                          # and ours is sound again
    finally:
        a.close()


def test_a_peer_added_but_not_yet_heard_from_holds_the_history_back(tmp_path):
    """Adding a device, then compacting before its first sync, must keep
    what it lacks: it then gets deltas, not a snapshot."""
    from agent.sync.peers import add_peer
    a = make_node(tmp_path / "a", segment_bytes=SEG)
    _fill(a, 300)
    add_peer(a.data_dir, "NEWPEER-AAAAAAA-BBBBBBB-CCCCCCC", "127.0.0.1:9")
    got = a.compact()
    assert got["segments_dropped"] == 0 and got["held_back_by"] == [
        "NEWPEER-AAAAAAA-BBBBBBB-CCCCCCC"], got
    b = make_node(tmp_path / "b", segment_bytes=SEG)
    sa, sb = pair(a, b)
    kinds = [e.kind for e in run(sa, sb)]
    assert "snapshot_sent" not in kinds and state(b) == state(a)
