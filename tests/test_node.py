
import pytest

from agent import Node, Inc, MV, Add, Remove, UsageError, MalformedChange, ClockSkewError
from agent.change import build_change, parse_change
from agent.node import init_identity
from agent.store.arena import HSIZE


def node(path, **kw):
    init_identity(str(path))
    return Node(str(path), **kw)


def test_every_field_kind_reads_back(tmp_path):
    with node(tmp_path / "a") as n:
        n.put("r", {"name": "Ada", "n": Inc(5), "m": MV(1), "s": Add("x", "y")})
        n.put("r", {"n": Inc(-2), "s": Remove("x")})
        assert n.get("r") == {"name": "Ada", "n": 3, "m": [1], "s": ["y"]}


def test_writes_survive_reopen(tmp_path):
    with node(tmp_path / "a") as n:
        n.put("k", {"v": 1})
    with node(tmp_path / "a") as n:
        assert n.get("k") == {"v": 1}
        assert n.stats()["clean_open"] and n.stats()["replayed_changes"] == 0


def test_delete_then_write_revives_with_fresh_fields(tmp_path):
    with node(tmp_path / "a") as n:
        n.put("k", {"a": 1, "c": Inc(4)})
        assert n.delete("k")
        assert n.get("k") is None and n.count() == 0
        assert not n.delete("k")
        n.put("k", {"b": 2, "c": Inc(1)})
        assert n.get("k") == {"b": 2, "c": 1}


def test_writing_a_field_as_another_kind_is_refused(tmp_path):
    with node(tmp_path / "a") as n:
        n.put("k", {"c": Inc(1)})
        with pytest.raises(UsageError, match="counter"):
            n.put("k", {"c": "text"})
        assert n.get("k") == {"c": 1}


def test_two_nodes_converge_after_exchanging_changes(tmp_path):
    with node(tmp_path / "a") as a, node(tmp_path / "b") as b:
        a.put("k", {"x": "from a", "n": Inc(1), "tags": Add("a")})
        b.put("k", {"x": "from b", "n": Inc(2), "tags": Add("b"), "m": MV("b")})
        from_a, from_b = list(a.changes_since({})), list(b.changes_since({}))
        assert b.merge_changes(from_a) == 1
        assert a.merge_changes(from_b) == 1
        assert a.get("k") == b.get("k")
        assert a.get("k")["n"] == 3 and a.get("k")["tags"] == ["a", "b"]
        assert a.merge_changes(from_b) == 0  # already have it: nothing applied twice


def test_malformed_change_leaves_the_store_untouched(tmp_path):
    with node(tmp_path / "a") as a, node(tmp_path / "b") as b:
        a.put("k", {"x": 1})
        raw = next(a.changes_since({}))
        b.put("k", {"x": 0})
        before = b.get("k"), b.stats()["log_bytes"]
        bad = bytearray(raw)
        bad[-20] ^= 1
        with pytest.raises(MalformedChange):
            b.merge_changes([bytes(bad)])
        c = parse_change(raw)
        lying = build_change(c.actor, c.seq, c.hlc, c.keys, c.fields, c.actors, c.nops,
                             bytes(c.ops) + b"\x00")
        with pytest.raises(MalformedChange):
            b.merge_changes([lying])
        assert (b.get("k"), b.stats()["log_bytes"]) == before


def test_change_stamped_beyond_the_skew_bound_is_refused(tmp_path):
    with node(tmp_path / "a") as a, node(tmp_path / "b", max_skew_ms=1000) as b:
        a.clock.last = (a.clock._wall() + 60_000) << 16  # a's clock runs a minute fast
        a.put("k", {"x": 1})
        with pytest.raises(ClockSkewError):
            b.merge_changes(list(a.changes_since({})))
        assert b.get("k") is None and b.clock.last < a.clock.last


def test_blob_failing_its_checksum_is_rebuilt_from_the_log(tmp_path):
    with node(tmp_path / "a") as n:
        n.put("k", {"x": "value", "c": Inc(2)})
        n.put("k", {"c": Inc(3)})
        s = n.store
        cls, slot = s.keys.location(s.keys.find(b"k"))
        s.arenas[cls].file.mm[slot * s.arenas[cls].size + HSIZE + 3] ^= 0x55
        assert n.get("k") == {"x": "value", "c": 5}


def test_crash_without_close_replays_the_log_tail(tmp_path):
    n = node(tmp_path / "a")
    n.put("k", {"x": 1})
    n.checkpoint()
    n.put("k", {"y": 2})
    n.put("j", {"z": 3})
    n.log.close()
    n.store.lock.release()  # the process dies: no store close
    with node(tmp_path / "a") as m:
        assert m.get("k") == {"x": 1, "y": 2} and m.get("j") == {"z": 3}
        assert not m.stats()["clean_open"] and m.stats()["replayed_changes"] >= 2
        m.put("k", {"x": 9})
        # a crash skips past the reserved seqs (never one issued twice), and
        # the new change names the last one the log holds as its prev
        last = parse_change([raw for _, raw in m.log.read()][-1])
        assert last.seq == m.seq > 3 and last.prev == 3


def test_watch_reports_local_and_merged_changes(tmp_path):
    with node(tmp_path / "a") as a, node(tmp_path / "b") as b:
        seen = []
        b.watch("user:", lambda k, rec: seen.append((k, rec)))
        a.put("user:1", {"n": "x"})
        b.merge_changes(list(a.changes_since({})))
        b.put("user:2", {"n": "y"})
        b.put("other", {"n": "z"})
        assert seen == [("user:1", {"n": "x"}), ("user:2", {"n": "y"})]


def test_scan_returns_visible_records_in_key_order(tmp_path):
    with node(tmp_path / "a") as n:
        for k in ["b:2", "a:1", "b:1", "b:3"]:
            n.put(k, {"v": k})
        n.delete("b:3")
        assert [k for k, _ in n.scan("b:")] == ["b:1", "b:2"]


def test_get_does_not_load_the_engine(tmp_path):
    with node(tmp_path / "a") as n:
        n.put("k", {"v": 1})
    with node(tmp_path / "a") as n:
        n.get("k")
        list(n.scan(""))
        assert n._engine is None


def test_many_changes_in_one_call_equal_one_by_one(tmp_path):
    with node(tmp_path / "a") as a, node(tmp_path / "b") as b, \
            node(tmp_path / "c") as c1, node(tmp_path / "d") as c2:
        for i in range(30):
            a.put("k%d" % (i % 7), {"x": i, "n": Inc(1), "s": Add("a%d" % i)})
            b.put("k%d" % (i % 5), {"x": -i, "n": Inc(2), "m": MV(i)})
            if i % 9 == 0:
                a.delete("k%d" % (i % 7))
        changes = list(a.changes_since({})) + list(b.changes_since({}))
        assert c1.merge_changes(changes) == len(changes)      # one engine call
        for raw in changes:
            c2.merge_changes([raw])                              # one call each
        assert list(c1.scan("")) == list(c2.scan(""))
        assert c1.vv == c2.vv


def test_bad_change_in_a_group_keeps_what_came_before(tmp_path):
    with node(tmp_path / "a") as a, node(tmp_path / "b") as b:
        for i in range(5):
            a.put("k%d" % i, {"x": i})
        changes = list(a.changes_since({}))
        c = parse_change(changes[3])
        changes[3] = build_change(c.actor, c.seq, c.hlc, c.keys, c.fields, c.actors,
                                  c.nops + 1, bytes(c.ops))  # lies about its op count
        with pytest.raises(MalformedChange):
            b.merge_changes(changes)
        assert [k for k, _ in b.scan("")] == ["k0", "k1", "k2"]
        assert b.vv[a.actor] == 3


def test_store_pages_are_unmapped_past_the_rss_budget_and_data_stays(tmp_path):
    from agent.node import TRIM_CHECK_EVERY
    with node(tmp_path / "a", rss_budget_mb=1) as n:      # a budget any process exceeds
        for i in range(TRIM_CHECK_EVERY + 10):
            n.put("k%05d" % i, {"v": i})
        assert n.trims >= 1
        assert all(n.get("k%05d" % i) == {"v": i} for i in range(0, TRIM_CHECK_EVERY, 97))
    with node(tmp_path / "a", rss_budget_mb=0) as n:      # 0: never
        for i in range(TRIM_CHECK_EVERY + 10):
            n.get("k%05d" % (i % 100))
        assert n.trims == 0


def test_a_refused_write_leaves_no_trace_in_the_log_or_the_seq(tmp_path):
    """A key over the limit, a write over the per-write limit or a record
    over 16 MiB is refused before the change gets a sequence number or a
    place in the log: nothing is logged, and the store opens again after a
    crash."""
    from agent.errors import RecordTooLarge, UsageError
    n = node(tmp_path / "a", max_write=10 << 20)
    n.put("ok", {"v": 1})
    seq = n.seq
    n.put("big", {"f%d" % i: "x" * (9 << 20) for i in range(1)})
    size = n.log.size()
    with pytest.raises(UsageError):
        n.put("k" * 1025, {"v": 1})
    with pytest.raises(UsageError):
        n.put("k", {"v": "x" * ((10 << 20) + 1)})
    with pytest.raises(RecordTooLarge):
        n.put("big", {"g": "y" * (8 << 20)})             # 17 MiB merged
    assert n.log.size() == size and n.seq == seq + 1 and n.get("k") is None
    assert set(n.get("big")) == {"f0"}
    n.put("big", {"v": "x" * 40_000})                   # past 32 KiB is fine
    assert len(n.get("big")["v"]) == 40_000
    n.log.close()
    n.store.lock.release()  # the process dies here
    with node(tmp_path / "a") as m:
        assert m.get("ok") == {"v": 1} and m.get("k") is None
        assert len(m.get("big")["f0"]) == 9 << 20


def test_crashes_do_not_push_the_clock_ahead_of_real_time(tmp_path):
    """The reserve keeps the clock mark a minute ahead of use. Starting from
    that mark after each crash pushed a crash-looping device's stamps a
    minute further ahead per crash, until peers held all its changes as
    stamped in the future. After each crash the clock starts at the last
    stamp the log holds; a stamp still never goes back."""
    import time as _t
    path = tmp_path / "a"
    last = 0
    for i in range(8):
        n = node(path)
        n.put("k", {"v": i})
        stamp = n.clock.last
        assert stamp > last                                   # never back
        last = stamp
        ahead = (stamp >> 16) - _t.time() * 1000
        assert ahead < 2000, "stamps %.0f s ahead after %d crashes" % (ahead / 1000, i)
        n.log.close()
        n.store.lock.release()                                # the process dies here
    with node(path) as n:
        assert n.get("k") == {"v": 7} and n.clock.last >= last


def test_own_changes_form_a_hash_chain_across_reopens_and_kills(tmp_path):
    """Each change names its actor's previous change by seq and hash
    (agent/change.py), after a clean reopen and after a SIGKILL that left
    part of the log unreplayed by any checkpoint; a seq skip after the kill
    still links to the last change the log kept."""
    import os
    import signal
    d = str(tmp_path / "a")
    with node(tmp_path / "a") as n:
        for i in range(5):
            n.put("k%d" % i, {"v": i})
    pid = os.fork()
    if pid == 0:
        n = Node(d)
        for i in range(5, 12):
            n.put("k%d" % i, {"v": i})
        n.log.commit()
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    with node(tmp_path / "a") as n:
        n.put("last", {"v": 1})
        chain = [parse_change(raw) for _, raw in n.log.read()]
    assert len(chain) == 13 and chain[0].prev_hash == bytes(16)
    assert chain[-1].seq > chain[-2].seq + 1          # the seqs reserved before the kill are skipped
    for lower, c in zip(chain, chain[1:]):
        assert (c.prev, c.prev_hash) == (lower.seq, lower.hash), c


def test_merged_batches_do_not_checkpoint_each_time(tmp_path):
    """A checkpoint (a dozen fsyncs) is due 60 s after the first change
    since the last one, or after 50,000 changes: not on every batch a peer
    sends, which would wear an SD card and slow every merge."""
    src = Node.open(str(tmp_path / "src"))
    for i in range(60):
        src.put("k%d" % i, {"v": i})
    raws = list(src.changes_since({}))
    src.close()
    dst = Node.open(str(tmp_path / "dst"))
    try:
        made = []
        real = dst.checkpoint
        dst.checkpoint = lambda: (made.append(1), real())
        for i in range(0, 60, 10):       # six batches of ten changes
            dst.merge_changes(raws[i:i + 10])
        assert made == []
        assert dst.count() == 60
    finally:
        dst.close()
