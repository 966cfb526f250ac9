"""Signed heads (agent/sync/signing.py): a relayed change reaches a third
device vouched for by its author's signature; a pinned peer that forges,
alters or strips changes gets them refused and reported, and the real ones
still arrive."""
import os

from agent.change import build_change, parse_change
from agent.core import ops as O
from agent.keys import actor_of, load_keys
from agent.sync.heads import HeadStore
from agent.sync.signing import Head, Signer, adopt_signed_actor
from agent.values import Inc
from agent.codec import varint

from .helpers import changes_frame, make_node, pair, run, state
from agent.sync.transport import settle


def _open(a, b, **kw):
    """Sessions a -> b past their HELLOs; returns (sa, sb)."""
    sa, sb = pair(a, b, **kw)
    settle(sa, sb.data_to_send())
    settle(sb, sa.data_to_send())
    assert sa.ready and sb.ready
    return sa, sb


def _refused(evs):
    return sum(e.count for e in evs if e.kind == "refused")


def _lww(hlc, value):
    """One lww op on key 0, field 0, actor 0 of a change's own tables."""
    return O.lww_op(b"\x00", b"\x00", varint(hlc), b"\x00", value)


def _real(node):
    return [parse_change(r) for _, r in node.log.read()]


def test_relayed_changes_reach_a_third_device_and_live_heads_thin_out(tmp_path):
    x, b, c = (make_node(tmp_path / n) for n in "xbc")
    for i in range(50):
        x.put("k%d" % i, {"v": i})
    run(*pair(x, b))
    evs = run(*pair(b, c))
    assert state(c) == state(x) and _refused(evs) == 0 and c.vv == x.vv
    for i in range(40):                      # live: one change, one batch, one head each time
        x.put("live%d" % i, {"v": i})
        run(*pair(x, b))
    store = pair(b, c)[0].head_store
    assert len(store) < 10, len(store)       # 41 heads came; thinned
    evs = run(*pair(b, c))
    assert state(c) == state(x) and _refused(evs) == 0
    reopened = HeadStore(str(tmp_path / "b"))  # what b kept is on disk
    assert set(reopened.heads) == set(store.heads)


def test_a_change_forged_for_another_device_is_refused_and_the_real_one_still_arrives(tmp_path):
    x, b, m = (make_node(tmp_path / n) for n in "xbm")
    x.put("c", {"n": Inc(5)})
    run(*pair(x, m))
    top = _real(x)[-1]
    sm, sb = _open(m, b)
    before = b.actor
    # m stamps changes as x (a counter of 1,000,000), as b itself, and signs them with
    # its own key under x's id; one goes with no head at all
    forged_x = build_change(x.actor, 2, top.hlc + 1, ["c"], ["v"], [x.actor], 1,
                            _lww(top.hlc + 1, 1_000_000), prev_hash=top.hash)
    forged_b = build_change(b.actor, 1, top.hlc + 1, ["mine"], ["v"], [b.actor], 1,
                            _lww(top.hlc + 1, 7))
    mk = Signer(m.data_dir)
    h = mk.sign(m.actor, 2, forged_x[-16:])
    lying = Head(x.actor, 2, forged_x[-16:], h.pub, h.sig)   # m's key, x's actor id
    settle(sb, changes_frame(1, [forged_x, forged_b], [lying]))
    evs = sb.events()
    assert not sb.closed
    assert _refused(evs) == 2 and sb.stats["forged"] == 2
    reasons = " ".join(r for e in evs if e.kind == "refused" for r in e.reasons)
    assert "signature" in reasons and "not signed by its actor" in reasons
    assert b.get("c") is None and b.get("mine") is None
    assert not b.known.has(x.actor, 2) and not b.known.has(b.actor, 1)
    assert b.actor == before and b.forks == []   # a forged change of b's own actor is no fork
    # a head signed by x's own key but for a change x never made: refused too
    hx = Signer(x.data_dir).sign(x.actor, 2, forged_x[-16:])
    hx.hash = bytes(16)
    settle(sb, changes_frame(2, [forged_x], [hx]))
    assert _refused(sb.events()) == 1 and b.get("c") is None
    # x's real change 2 still reaches b, through m
    x.put("c", {"n": Inc(1)})
    run(*pair(x, m))
    evs = run(*pair(m, b))
    assert b.get("c") == {"n": 6} and _refused(evs) == 0


def test_a_relayed_change_altered_on_the_way_is_refused_with_what_lies_below_it(tmp_path):
    x, m, b = (make_node(tmp_path / n) for n in "xmb")
    for i in range(6):
        x.put("k%d" % i, {"v": i})
    run(*pair(x, m))
    real = _real(x)
    bad = real[2]   # change 3: m rewrites its value, keeping its place in the chain
    altered = build_change(bad.actor, bad.seq, bad.hlc, bad.keys, list(bad.fields), bad.actors,
                           bad.nops, _lww(bad.hlc, 999), prev=bad.prev,
                           prev_hash=bad.prev_hash)
    raws = [c.raw for c in real]
    raws[2] = altered
    head = HeadStore(str(tmp_path / "m")).get(x.actor, 6, real[5].hash)
    assert head is not None                   # m kept x's head for the batch it got
    sm, sb = _open(m, b)
    settle(sb, changes_frame(1, raws, [head]))
    assert _refused(sb.events()) == 3        # 3 altered; 1 and 2 hang below it
    assert [b.get("k%d" % i) for i in range(6)] == [None] * 3 + [{"v": i} for i in (3, 4, 5)]
    run(*pair(x, b))                          # the real ones, from x
    assert [b.get("k%d" % i) for i in range(6)] == [{"v": i} for i in range(6)]


def _legacy(raw_v3):
    """The same change in format 2 (no chain), as a build before 0.2.0 wrote it."""
    from agent.change import _blake
    c = parse_change(raw_v3)
    body = bytearray(raw_v3[:-16])
    p = 9 + len(varint(c.seq)) + len(varint(c.seq - 1 - c.prev))
    del body[p:p + 16]
    body[0] = 2
    body = bytes(body)
    return body + _blake(body, digest_size=16).digest()


def test_unsigned_changes_of_an_older_version_are_refused_unless_accepted(tmp_path):
    x, b, d = (make_node(tmp_path / n) for n in "xbd")
    x.put("old", {"v": 1})
    old = _legacy(_real(x)[0].raw)
    assert parse_change(old).prev_hash is None
    sx, sb = _open(x, b)
    settle(sb, changes_frame(1, [old]))
    evs = sb.events()
    assert _refused(evs) == 1 and sb.stats["unsigned"] == 1 and b.get("old") is None
    assert "--accept-unsigned" in " ".join(r for e in evs if e.kind == "refused"
                                           for r in e.reasons)
    sx, sd = _open(x, d, accept_unsigned=True)
    settle(sd, changes_frame(1, [old]))
    assert _refused(sd.events()) == 0 and d.get("old") == {"v": 1}


def test_a_directory_made_before_keys_moves_to_a_signed_actor(tmp_path):
    import json
    x, b = make_node(tmp_path / "x"), make_node(tmp_path / "b")
    x.put("before", {"v": 1})
    x.close()
    d = str(tmp_path / "x")
    os.unlink(os.path.join(d, "actor.key"))   # as a 0.1 directory: no key for its actor
    x = make_node(tmp_path / "x")
    from agent.sync.session import sync_parts
    old = x.actor
    msg = adopt_signed_actor(x, sync_parts(x)[0])
    assert msg and x.actor != old and x.actor in load_keys(d)
    assert actor_of(bytes(sync_parts(x)[0]._keys[x.actor][1])) == x.actor
    assert adopt_signed_actor(x, sync_parts(x)[0]) is None      # once
    x.put("after", {"v": 2})
    evs = run(*pair(x, b))
    assert b.get("after") == {"v": 2} and b.get("before") is None and _refused(evs) == 1
    with open(os.path.join(d, "identity.json")) as f:
        assert "%016x" % old in json.load(f)["previous_actors"]


def test_a_batch_leaves_out_prev_hash_only_where_the_change_before_is_in_it(tmp_path):
    """On the wire a change's prev_hash is left out when the change before
    it travels in the same batch (it is that change's hash): 16 of every
    change's bytes. A peer that leaves it out otherwise is a ProtocolError
    and nothing of its batch is applied."""
    from agent.codec import put_varint
    from agent.change import chain_head
    from agent.sync.frame import encode_frame
    from agent.sync.session import CHANGES
    from agent.codec import get_varint
    from agent.sync.frame import FrameReader
    x, b, d = (make_node(tmp_path / n) for n in "xbd")
    for i in range(20):
        x.put("k%d" % i, {"v": i})
    sx, sb = _open(x, b)
    sx.pump()
    r = FrameReader()
    r.feed(sx.data_to_send())
    m = r.next()
    assert m[0] == CHANGES
    _, p = get_varint(m, 1)
    n, p = get_varint(m, p)
    cuts = []
    for _ in range(n):
        ln, p = get_varint(m, p)
        cuts.append(ln & 1)
        p += ln >> 1
    assert n == 20 and cuts == [0] + [1] * 19   # 19 prev_hashes stay home
    settle(sb, encode_frame(m))
    assert state(b) == state(x) and sb.stats["forged"] == 0
    raws = [c.raw for c in _real(x)]
    off = chain_head(raws[5])[4]
    out = bytearray((CHANGES,))
    put_varint(out, 1)
    put_varint(out, 1)
    body = raws[5][:off] + raws[5][off + 16:-16]
    put_varint(out, len(body) << 1 | 1)      # "the change before is here": it is not
    out += body
    put_varint(out, 0)
    _, sd = _open(x, d)
    settle(sd, encode_frame(out))
    assert sd.closed and "not before it in the batch" in str(sd.error) and d.get("k5") is None
