"""The convergence check (agent/sync/check.py, agent/history/digests.py):
two replicas whose version vectors agree but whose records do not (a lost
change, as bit rot or a fork leaves) are told apart key by key and repaired;
a peer's bad answers and records close the session and change nothing."""
import struct

import pytest

from agent.codec import put_varint
from agent.history.digests import digests_of, record_digest
from agent.sync.check import RECORDS, TREE_ANS, Compare, encode_records
from agent.sync.frame import encode_frame
from agent.sync.transport import settle
from agent.values import is_visible

from .helpers import make_node, pair, run, shuttle, state


def lose_updates(tmp_path, n=600, lost=("k3", "k77", "k401")):
    """a and b, caught up (vectors equal), except that b's store holds the
    state before a's last update of each key in `lost`."""
    a, b = make_node(tmp_path / "a"), make_node(tmp_path / "b")
    b.put("b-first", {"zzz": 1, "y": "b"})     # b interns names in another order
    for i in range(n):
        a.put("k%d" % i, {"x": i, "y": "s%d" % i, "tags[]": "t%d" % (i % 7)})
    run(*pair(a, b))
    old = {k: b.store.load(k) for k in lost}
    digests_of(b.store)                        # the tree exists before the damage
    for k in lost:
        a.put(k, {"x": -1})
    run(*pair(a, b))
    assert a.vv == b.vv
    for k, blob in old.items():               # the damage: b's updates lost
        b.store.save(k, blob, is_visible(blob))
    return a, b


def raw_records(node):
    return {k: bytes(node.store.load(k)) for k, _ in node.store.scan("")}


def check(a, b, repair=True):
    sa, sb = pair(a, b)
    run(sa, sb)
    sb.compare = Compare(sb, repair)
    sb.compare.start()
    shuttle(sa, sb)
    assert not sa.closed and not sb.closed, (sa.error, sb.error)
    assert sb.compare.done
    return sb.compare.report()


def test_lost_updates_are_found_and_repaired(tmp_path):
    a, b = lose_updates(tmp_path)
    assert digests_of(a.store).root != digests_of(b.store).root
    rep = check(a, b)
    assert rep["differ"] == ["k3", "k401", "k77"]
    assert rep["agree"] and rep["repaired_here"] == ["k3", "k401", "k77"]
    assert state(a) == state(b)
    assert digests_of(a.store).root == digests_of(b.store).root
    # every record, CRDT metadata included, in canonical form
    for k in raw_records(a):
        assert record_digest(a.store, k.encode(), a.store.load(k)) == \
            record_digest(b.store, k.encode(), b.store.load(k)), k
    assert rep["round_trips"] <= 6 and rep["wire_bytes"] < 64 << 10
    assert check(a, b)["differ"] == []


def test_a_repair_is_in_the_snapshot(tmp_path):
    """A joined state may be in no log: it is made durable in this device's
    snapshot, the base of every rebuild (history/catchup.py)."""
    from agent.history.catchup import own_blobs
    a, b = lose_updates(tmp_path)
    assert own_blobs(b, ["k3"]) == {}
    check(a, b)
    got = own_blobs(b, ["k3", "k77", "k401"])
    assert got == {k: bytes(b.store.load(k)) for k in ("k3", "k77", "k401")}


def test_repairs_soon_after_another_wait_for_the_next_snapshot(tmp_path):
    """A peer cannot make this device rewrite its snapshot per message: a
    second repair within MEND_GAP is saved by close() (or serve's loop)."""
    from agent.history.catchup import own_blobs
    from agent.node import Node
    a, b = lose_updates(tmp_path)
    check(a, b)
    old = bytes(b.store.load("k5"))
    a.put("k5", {"x": "again"})
    run(*pair(a, b))
    b.store.save("k5", old, is_visible(old))
    assert check(a, b)["repaired_here"] == ["k5"]
    assert own_blobs(b, ["k5"]) == {"k5": old} and b.mended_unsaved
    b.close()
    b2 = Node(str(tmp_path / "b"))
    try:
        assert own_blobs(b2, ["k5"]) == {"k5": bytes(b2.store.load("k5"))} != {"k5": old}
    finally:
        b2.close()


def test_no_repair_lists_and_changes_nothing(tmp_path):
    a, b = lose_updates(tmp_path)
    before_a, before_b = raw_records(a), raw_records(b)
    rep = check(a, b, repair=False)
    assert rep["differ"] == ["k3", "k401", "k77"] and not rep["agree"]
    assert raw_records(a) == before_a and raw_records(b) == before_b


def test_a_record_only_one_side_holds(tmp_path):
    a, b = lose_updates(tmp_path, lost=())
    blob = a.store.load("k5")
    b.store.save("k5", b"", False)           # b lost the record whole
    assert blob
    rep = check(a, b)
    assert rep["differ"] == ["k5"] and rep["agree"]
    assert state(b)["k5"] == state(a)["k5"]


def _records_frame(fields, actors, records, reply=False):
    out = bytearray((RECORDS, 1 if reply else 0))
    put_varint(out, len(fields))
    for f in fields:
        put_varint(out, len(f))
        out += f
    put_varint(out, len(actors))
    for x in actors:
        out += struct.pack("<Q", x)
    put_varint(out, len(records))
    for k, blob in records:
        put_varint(out, len(k))
        out += k
        put_varint(out, len(blob))
        out += blob
    return encode_frame(out)


def _caught_up(a, b):
    sa, sb = pair(a, b)
    run(sa, sb)
    return sa, sb


@pytest.mark.parametrize("damage", ["blob", "future", "twice", "key", "trailing", "actor"])
def test_bad_records_close_the_session_and_change_nothing(tmp_path, damage):
    from agent.core import reference as R
    a, b = lose_updates(tmp_path)
    sa, sb = _caught_up(a, b)
    good = encode_records(a, ["k3", "k77"], reply=False)
    # take the good message apart: fields, actors, records
    from agent.sync.check import decode_records
    m = decode_records(good, b.clock)
    fields = [f.encode() for f in m.fields]
    actors, records = list(m.actors), list(m.records)
    if damage == "blob":
        records[1] = (records[1][0], records[1][1][:-1])
    elif damage == "future":
        r = R.decode_blob(records[1][1])
        for fid, (kind, st) in r.fields.items():
            if kind == R.LWW:
                st[0] += 3600_000 << 16           # an hour ahead of every clock
        records[1] = (records[1][0], R.encode_blob(r))
    elif damage == "twice":
        records.append(records[0])
    elif damage == "key":
        records[1] = (b"\xff\xfe", records[1][1])
    elif damage == "actor":
        actors = actors[:-1]
    frame = _records_frame(fields, actors, records)
    if damage == "trailing":
        frame = encode_frame(bytes(good) + b"\x00")
    before = raw_records(b)
    settle(sb, frame)
    assert sb.closed and sb.error is not None
    assert raw_records(b) == before


def test_the_records_of_a_good_message_are_joined(tmp_path):
    # the counterpart of the test above: the same message undamaged is taken
    a, b = lose_updates(tmp_path)
    sa, sb = _caught_up(a, b)
    settle(sb, encode_frame(encode_records(a, ["k3", "k77"], reply=False)))
    assert not sb.closed
    assert state(b)["k3"] == state(a)["k3"] and state(b)["k77"] == state(a)["k77"]
    assert state(b)["k401"] != state(a)["k401"]


@pytest.mark.parametrize("damage", ["count", "level", "short"])
def test_a_wrong_tree_answer_closes_the_session(tmp_path, damage):
    a, b = lose_updates(tmp_path)
    sa, sb = _caught_up(a, b)
    sb.compare = Compare(sb)
    sb.compare.start()
    sb.data_to_send()                    # the TREE(0) goes nowhere: a answers wrongly
    out = bytearray((TREE_ANS,))
    put_varint(out, 1 if damage == "level" else 0)
    put_varint(out, 2 if damage == "count" else 1)
    out += bytes(256 if damage != "short" else 255)
    before = raw_records(b)
    settle(sb, encode_frame(out))
    assert sb.closed and "TREE_ANS" in str(sb.error)
    assert raw_records(b) == before


def test_a_first_build_goes_in_slices_and_the_asker_waits(tmp_path, monkeypatch):
    """A large store's tree is built in slices (serve's loop runs between
    them): asked before it is complete, a peer answers "still building"
    and is asked again; the walk then gives the same keys."""
    import agent.sync.check as C
    a, b = lose_updates(tmp_path, n=2000)
    for node in (a, b):
        node.store.digests = None             # as after a crash: no tree yet
    monkeypatch.setattr(C, "BUILD_SLICE", 0)  # one slice of 256 keys per ask
    sa, sb = pair(a, b)
    run(sa, sb)
    c = sb.compare = Compare(sb)
    slices = 1
    while not c.prepare():
        slices += 1
    assert slices >= 8                         # 2,001 keys, 256 a slice
    c.start()
    shuttle(sa, sb, rounds=400)
    rep = c.report()
    assert c.done and rep["busy_waits"] >= 7, rep
    assert rep["differ"] == ["k3", "k401", "k77"] and rep["agree"]
