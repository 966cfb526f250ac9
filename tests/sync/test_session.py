"""The sans-I/O session, two or three nodes in one process, byte queues between."""
import os

from agent.sync.session import Session, CHANGES
from agent.sync.frame import FrameReader, ProtocolError
from agent.values import Inc, Add
from agent.change import parse_change

from .helpers import changes_frame, make_node, pair, run, state
from agent.sync.transport import settle


def test_two_nodes_converge_both_ways(tmp_path):
    a, b = make_node(tmp_path / "a"), make_node(tmp_path / "b")
    for i in range(500):
        a.put("k%d" % i, {"v": i, "n": Inc(1)})
    for i in range(0, 500, 7):
        b.put("k%d" % i, {"n": Inc(2), "tags": Add("b")})
    sa, sb = pair(a, b, batch_bytes=8000)
    evs = run(sa, sb)
    assert sa.caught_up and sb.caught_up and not sa.closed
    assert a.vv == b.vv and state(a) == state(b)
    assert sa.stats["sent_batches"] > 3          # really batched
    assert sum(e.new for e in evs if e.kind == "received") == 500 + 72
    a.close(), b.close()


def test_three_nodes_relay_through_the_middle(tmp_path):
    a, b, c = (make_node(tmp_path / n) for n in "abc")
    for n, node in zip("abc", (a, b, c)):
        for i in range(50):
            node.put("shared%d" % i, {"n": Inc(1), n: i})
    s1 = pair(a, b)
    run(*s1)
    s2 = pair(b, c)
    run(*s2)
    s3 = pair(a, b)
    run(*s3)
    assert a.vv == b.vv == c.vv
    assert state(a) == state(b) == state(c)
    assert state(a)["shared7"]["n"] == 3
    for n in (a, b, c):
        n.close()


def test_second_session_sends_nothing_already_held(tmp_path):
    a, b = make_node(tmp_path / "a"), make_node(tmp_path / "b")
    for i in range(100):
        a.put("k%d" % i, {"v": i})
    run(*pair(a, b))
    sa, sb = pair(a, b)
    run(sa, sb)
    assert sa.stats["sent_changes"] == 0 and sb.stats["sent_changes"] == 0
    assert sa.caught_up and sb.caught_up


def _capture_changes(sa, sb):
    """Run a pair, recording every CHANGES frame sa sent."""
    frames = []
    for _ in range(1000):
        for s, o in ((sa, sb), (sb, sa)):
            s.pump()
            data = s.data_to_send()
            if s is sa and data:
                r = FrameReader()
                r.feed(data)
                pos = 0
                import struct
                while pos < len(data):
                    n = struct.unpack_from("<I", data, pos)[0]
                    payload = r.next()
                    if payload[0] == CHANGES:
                        frames.append(data[pos:pos + 4 + n])
                    pos += 4 + n
            if data:
                settle(o, data)
        if sa.caught_up and sb.caught_up:
            return frames
    raise AssertionError("did not finish")


def test_replayed_frames_change_nothing(tmp_path):
    a, b = make_node(tmp_path / "a"), make_node(tmp_path / "b")
    for i in range(200):
        a.put("k%d" % i, {"n": Inc(1)})
    sa, sb = pair(a, b, batch_bytes=4000)
    frames = _capture_changes(sa, sb)
    assert len(frames) > 1
    before, vv, log = state(b), dict(b.vv), b.log.size()
    # replayed inside the same session: refused as out of order
    settle(sb, frames[0])
    assert sb.closed and isinstance(sb.error, ProtocolError)
    # replayed into a fresh session: every change is a duplicate
    s2 = Session(b, "dev-b", "dev-a")
    s2.start()
    sa2 = Session(a, "dev-a", "dev-b")
    sa2.start()
    settle(s2, sa2.data_to_send())          # a genuine HELLO, then the old frames
    for f in frames:
        settle(s2, f)
    assert not s2.closed
    assert s2.stats["new"] == 0 and s2.stats["dup"] == 200
    assert state(b) == before and b.vv == vv and b.log.size() == log


def test_change_stamped_beyond_the_clock_bound_is_held_for_its_actor_only(tmp_path):
    """A's clock runs an hour ahead for a while. B holds A's changes from
    there on (they wait behind the first), takes everything else in the same
    batches (C's changes, relayed by A, and A's own before the skew), keeps
    the session, and applies the held ones once its clock has moved; they
    survive a restart, and no session sends them again."""
    a, b, c = (make_node(tmp_path / n) for n in "abc")
    for i in range(20):
        c.put("c%d" % i, {"v": i})
    run(*pair(c, a))                                   # A relays C's changes
    a.put("ok", {"v": 1})
    real = a.clock._wall
    a.clock._wall = lambda: real() + 3600_000
    a.put("future", {"v": 2})
    a.clock._wall = real                               # fixed; the HLC stays ahead
    a.put("after", {"v": 3})
    for i in range(20, 40):
        c.put("c%d" % i, {"v": i})
    run(*pair(c, a))
    sa, sb = pair(a, b)
    evs = run(sa, sb)
    assert not sa.closed and not sb.closed and sa.caught_up and sb.caught_up
    assert all(b.get("c%d" % i) == {"v": i} for i in range(40))   # C's flow
    assert b.get("ok") == {"v": 1}
    assert b.get("future") is None and b.get("after") is None      # held, in order
    pended = [e for e in evs if e.kind == "pended"]
    assert sum(e.held for e in pended) == 2 and "ahead" in pended[0].reasons[0]
    st = b.stats()
    assert st["held_changes"] == 2 and st["quarantined_changes"] == 0
    path = b.data_dir
    b.close()
    b = make_node(path)                                # held changes are durable
    assert b.stats()["held_changes"] == 2
    sa, sb = pair(a, b)
    run(sa, sb)
    assert sa.stats["sent_changes"] == 0 and sb.stats["new"] == 0   # nothing resent
    b.clock._wall = lambda: real() + 3600_000 + 1000   # B's clock reaches A's stamps
    b._next_release = 0
    assert b.release_due() == 2
    assert b.get("future") == {"v": 2} and b.get("after") == {"v": 3}
    assert b.stats()["held_changes"] == 0 and b.known.has(a.actor, a.seq)
    assert not os.listdir(os.path.join(path, "pending"))
    for n in (a, b, c):
        n.close()


def test_held_change_is_released_by_the_operator(tmp_path):
    a, b = make_node(tmp_path / "a"), make_node(tmp_path / "b")
    real = a.clock._wall
    a.clock._wall = lambda: real() + 10 * 86400_000   # ten days ahead
    a.put("k", {"n": Inc(5)})
    run(*pair(a, b))
    assert b.get("k") is None and b.stats()["held_changes"] == 1
    assert b.release_due() == 0                        # the clock has not moved
    assert b.release_due(force=True, actor=a.actor) == 1
    assert b.get("k") == {"n": 5} and b.stats()["held_changes"] == 0
    a.close(), b.close()


def test_a_change_that_cannot_be_applied_is_quarantined_and_the_rest_flow(tmp_path):
    """Two legal writes that merge past the largest record (16 MiB): the
    second to arrive is quarantined (kept, counted), and later changes of
    every actor, its own included, still arrive; the session is not closed."""
    from agent.store.big import MAX_RECORD
    a, b = (make_node(tmp_path / n, max_write=MAX_RECORD) for n in "ab")
    half = "x" * (MAX_RECORD // 2 + 100)
    a.put("r", {"fa": half})
    b.put("r", {"fb": half})
    for i in range(5):
        a.put("later%d" % i, {"v": i})
        b.put("blater%d" % i, {"v": i})
    sa, sb = pair(a, b)
    evs = run(sa, sb)
    assert not sa.closed and not sb.closed and sa.caught_up and sb.caught_up
    for n in (a, b):
        st = n.stats()
        assert st["quarantined_changes"] == 1, st
        assert [it["why"] for it in n.pending.to_json()][0].startswith("RecordTooLarge")
    assert all(b.get("later%d" % i) == {"v": i} == a.get("blater%d" % i) for i in range(5))
    assert b.stats()["held_changes"] == 0
    assert any(e.kind == "pended" and e.quarantined == 1 for e in evs)
    sa, sb = pair(a, b)
    run(sa, sb)
    assert sa.stats["sent_changes"] == 0 == sb.stats["sent_changes"]   # not resent
    a.close(), b.close()


def test_bloom_false_positives_never_lose_a_change(tmp_path):
    """A peer filter that claims every hash (all bits set) makes the sender
    skip whatever it may; the peer's vector still brings every change over."""
    from pybloom_live import BloomFilter
    from agent.sync import session as S

    class Lying(S.Recent):
        def bloom(self):
            bf = BloomFilter(S.BLOOM_CAPACITY, S.BLOOM_ERROR)
            bf.bitarray.setall(True)
            return bf

    a, b = make_node(tmp_path / "a"), make_node(tmp_path / "b")
    for i in range(300):
        a.put("k%d" % (i % 40), {"n": Inc(1)})
    sa = Session(a, "dev-a", "dev-b", batch_bytes=3000)
    sb = Session(b, "dev-b", "dev-a", recent=Lying())
    sa.start()
    sb.start()
    run(sa, sb)
    assert sa.stats["skipped"] > 0 and sa.stats["rewinds"] > 0
    assert sa.caught_up and sb.caught_up
    assert b.vv == a.vv and state(a) == state(b)


def test_a_change_after_a_gap_is_merged_and_the_gap_is_fetched(tmp_path):
    a, b = make_node(tmp_path / "a"), make_node(tmp_path / "b")
    for i in range(3):
        a.put("k%d" % i, {"v": i})
    raws = list(a.changes_since({}))
    sa, sb = pair(a, b)
    settle(sa, sb.data_to_send())
    settle(sb, sa.data_to_send())
    from agent.sync.signing import Signer
    settle(sb, changes_frame(1, [raws[2]], [Signer(a.data_dir).sign(a.actor, 3, raws[2][-16:])]))
    # merged out of order: the ops are states, so order does not matter; the
    # two changes before it become a gap that b asks for
    assert not sb.closed and b.get("k2") == {"v": 2} and b.get("k0") is None
    assert b.known.gaps[a.actor] == [[1, 2]] and not b.known.has(a.actor, 1)
    sa, sb = pair(a, b)
    run(sa, sb)
    assert [b.get("k%d" % i) for i in range(3)] == [{"v": i} for i in range(3)]
    assert not b.known.gaps and sb.stats["new"] == 2 and sa.stats["sent_changes"] == 2


def test_a_damaged_log_entry_is_skipped_for_peers_and_fetched_again_from_one(tmp_path):
    """A flips a byte inside one change of its log. A fresh peer C still gets
    every change after it (one damaged entry never hides the rest) and sees
    a gap; A finds what its log lost and gets it back from B, which then
    reaches C too: everyone ends with every record."""
    import os
    a, b, c = (make_node(tmp_path / n) for n in "abc")
    for i in range(60):
        a.put("k%02d" % i, {"v": i, "pad": "x" * 40})
    run(*pair(a, b))
    assert state(b) == state(a)
    positions = [pos for pos, _ in a.log.read()]
    seg, off = positions[30]
    a.close()
    with open(os.path.join(str(tmp_path / "a"), "log", "%08d.seg" % seg), "r+b") as f:
        f.seek(off + 20)
        byte = f.read(1)[0]
        f.seek(off + 20)
        f.write(bytes([byte ^ 0xFF]))   # always a change (writing 0xff was a no-op 1 in 256)
    a = make_node(tmp_path / "a")
    assert state(a) == state(b)  # the store has every record; only the log lost one
    run(*pair(a, c))
    got = state(c)
    assert len(got) == 59 and "k30" not in got and c.known.missing() == 1
    assert a.stats()["log_damaged_bytes"] > 0
    run(*pair(a, b))  # a asks for what its log lost; b holds it
    assert sum(1 for _ in a.log.read()) == 60 and not a.known.gaps  # 59 + the one fetched
    run(*pair(a, c))
    assert state(c) == state(a) == state(b) and not c.known.gaps
    for n in (a, b, c):
        n.close()


def _have(known):
    from agent.sync.frame import encode_frame
    from agent.sync.session import HAVE
    out = bytearray((HAVE,))
    known.encode(out)
    out.append(0)                                 # no Bloom filter
    return encode_frame(bytes(out))


def test_have_resends_only_what_the_peer_newly_reports_missing(tmp_path):
    """Five tiny HAVEs with an empty vector (a stale or hostile peer) make
    the sender resend nothing; a HAVE that reports one change lost from the
    peer's log makes it resend exactly that one."""
    from agent.vector import Known
    a, b = make_node(tmp_path / "a"), make_node(tmp_path / "b")
    for i in range(300):
        a.put("k%d" % i, {"v": i})
    sa, sb = pair(a, b)
    run(sa, sb)
    sent = sa.stats["sent_changes"]
    assert sent == 300
    for _ in range(5):
        settle(sa, _have(Known()))
        sa.pump()
    assert not sa.closed and sa.stats["sent_changes"] == sent
    assert len(sa.data_to_send()) < 200
    lost = b.known.copy()
    lost.lose(a.actor, 150)
    settle(sa, _have(lost))
    for _ in range(3):
        sa.pump()
    assert sa.stats["sent_changes"] == sent + 1
    a.close(), b.close()


def test_receive_does_no_disk_work_it_hands_out_one_merge_at_a_time(tmp_path):
    """Sans I/O: receive() parses and returns the Merge to perform; the
    receiver's log and store are untouched until the caller performs it, and
    the next batch is not parsed before merged() (so ACKs keep their order)."""
    from agent.sync.session import Merge, TRANSITIONS, OPEN, CHANGES
    a, b = make_node(tmp_path / "a"), make_node(tmp_path / "b")
    for i in range(200):
        a.put("k%d" % i, {"v": i})
    sa, sb = pair(a, b, batch_bytes=2000)
    settle(sb, sa.data_to_send())                 # the HELLOs
    settle(sa, sb.data_to_send())
    sa.pump()
    data = sa.data_to_send()                      # several CHANGES batches
    log, vv = b.log.size(), dict(b.vv)
    acts = sb.receive(data)
    assert len(acts) == 1 and isinstance(acts[0], Merge) and acts[0].batch == 1
    assert b.log.size() == log and b.vv == vv and b.get("k0") is None
    assert sb.receive(b"") == []                  # waits for merged()
    t = b.receive(acts[0].changes)
    sb.merged(acts[0], t, b.advertised())
    assert b.get("k0") == {"v": 0} and t.new == acts[0].count
    nxt = sb.receive(b"")
    assert len(nxt) == 1 and nxt[0].batch == 2
    assert TRANSITIONS[(OPEN, CHANGES)] == ("_on_changes", OPEN)
    a.close(), b.close()


def test_past_the_pending_cap_changes_are_not_taken_and_nothing_loops(tmp_path, monkeypatch):
    """With the pending area full, further held changes are not taken: the
    receiver's ACK lacks them, the sender does not send them again in that
    session (no rewind loop), and a later session delivers them once room
    is made."""
    from agent import pending
    monkeypatch.setattr(pending, "MAX_PENDING", 3)
    a, b = make_node(tmp_path / "a"), make_node(tmp_path / "b")
    real = a.clock._wall
    a.clock._wall = lambda: real() + 3600_000
    for i in range(5):
        a.put("f%d" % i, {"v": i})
    sa, sb = pair(a, b)
    evs = run(sa, sb)
    assert sa.caught_up and sb.caught_up and not sa.closed
    assert b.stats()["held_changes"] == 3
    assert sb.stats["refused"] == 2 and sa.stats["not_taken"] == 2
    assert sa.stats["sent_changes"] == 5 and sa.stats["rewinds"] == 0
    assert sum(e.refused for e in evs if e.kind == "pended") == 2
    assert b.release_due(force=True) == 3
    sa, sb = pair(a, b)
    run(sa, sb)
    assert sa.stats["sent_changes"] == 2 and b.stats()["held_changes"] == 2
    assert b.release_due(force=True) == 2
    assert all(b.get("f%d" % i) == {"v": i} for i in range(5))
    a.close(), b.close()


def test_a_quarantined_change_is_retried_by_a_new_build(tmp_path):
    """A change quarantined by an older build is applied when a build that
    can apply it opens the data directory."""
    from agent import pending
    a, b = make_node(tmp_path / "a"), make_node(tmp_path / "b")
    a.put("k", {"v": 1})
    c = [parse_change(raw) for _, raw in a.log.read()][0]
    b.pending.add(c, pending.QUARANTINED, "CoreError: this build could not apply it")
    it = b.pending.items[(c.actor, c.seq)]
    path = b.data_dir
    b.close()
    it.build = "0.0.1"                                   # written by an older build
    with open(it.path, "wb") as f:
        f.write(pending.encode(it, c.raw))
    b = make_node(path)
    assert b.get("k") == {"v": 1} and b.stats()["quarantined_changes"] == 0
    assert any("applied 1 pending" in e for e in b.events)
    a.close(), b.close()
