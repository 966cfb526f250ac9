"""The state join (agent/history/join.py) against real merges: joining two
replicas' record states must give, in full CRDT metadata, what merging all
the changes of both gives."""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from agent.core import ReferenceEngine
from agent.core import reference as R
from agent.errors import MalformedChange, UsageError
from agent.history.join import join_blob
from agent.node import Node, init_identity
from agent.values import Add, Inc, MV, Remove

KEYS = ["a", "b"]
FIELDS = ["f", "g", "s"]


def _canon(node, blob):
    """A record's full state with names and actor ids instead of store ids."""
    if not blob:
        return None
    r = R.decode_blob(blob)
    name, aid = node.store.field_names, node.store.actor_id
    out = {"dead": r.dead}
    for fid, (kind, s) in r.fields.items():
        if kind == R.LWW:
            v = None if s is None else (s[0], aid(s[1]), s[2])
        elif kind == R.CTR:
            v = sorted((aid(a), t, p, n) for (a, t), (p, n) in s.items())
        elif kind == R.MV:
            v = sorted((aid(a), w, c, x) for a, (w, c, x) in s.items())
        else:
            chains, elems = s
            v = (sorted((aid(a), b, t, tuple(sorted(ls))) for a, (b, t, ls) in chains.items()),
                 sorted((x, tuple(sorted((aid(a), e[0], e[1]) for a, e in ents.items())))
                        for x, ents in elems.items()))
        out[name[fid]] = (kind, v)
    return out


def _blob(node, key):
    return bytes(node.store.load(key) or b"")


def _join_into(dst, src, key):
    """src's record state joined into dst's, in dst's ids (dst interns names)."""
    fmap = [dst.store.field_id(f) for f in src.store.field_names]
    amap = [dst.store.actor_index(src.store.actor_id(i))
            for i in range(len(src.store.actor_table) // 8)]
    return join_blob(_blob(dst, key), _blob(src, key), fmap, amap, dst.store.actors.items)


def _pull(dst, src):
    dst.merge_changes(list(src.changes_since(dst.known)))


op = st.tuples(st.integers(0, 2), st.sampled_from(KEYS), st.sampled_from(FIELDS),
               st.integers(0, 7), st.integers(0, 3))


def _do(n, kind, key, field, x, replica):
    try:
        _write(n, kind, key, field, x, replica)
    except UsageError:
        pass        # a kind this replica already holds otherwise: refused locally


def _write(n, kind, key, field, x, replica):
    if kind == 0 and x == 7:
        n.delete(key)
    elif field == "s" or kind == 1:
        n.put(key, {"s": Add(x % 4) if x < 5 else Remove(x % 4)})
    elif field == "g":
        n.put(key, {"g": Inc(x - 3) if kind else MV(x)})
    else:
        n.put(key, {"f": "r%d-%d" % (replica, x)})


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(0, 2), op, st.integers(0, 5)), min_size=1, max_size=30))
def test_joining_two_replicas_states_equals_merging_all_their_changes(tmp_path_factory, steps):
    base = tmp_path_factory.mktemp("j")
    nodes = []
    for i in range(4):
        d = str(base / str(i))
        init_identity(d)
        nodes.append(Node(d, engine=ReferenceEngine()))
    a, b, c, j = nodes
    try:
        reps = [a, b, c]
        for who, (kind, key, field, x, _), sync in steps:
            _do(reps[who], kind, key, field, x, who)
            if sync < 3:      # now and then one replica pulls from another
                src, dst = reps[sync], reps[(sync + who + 1) % 3]
                if src is not dst:
                    _pull(dst, src)
        _pull(j, a)
        _pull(j, b)           # j: every change of a and b, merged
        for key in KEYS:
            joined = _join_into(a, b, key)
            assert _canon(a, joined) == _canon(j, _blob(j, key)), key
            back = _join_into(b, a, key)           # commutes
            assert _canon(b, back) == _canon(a, joined)
            assert _canon(a, join_blob(joined, joined, range(len(a.store.field_names)),
                                       range(len(a.store.actor_table) // 8),
                                       a.store.actors.items)) == _canon(a, joined)  # idempotent
    finally:
        for n in nodes:
            n.close()


def test_a_removal_one_side_saw_wins_over_the_others_live_add(tmp_path):
    """The dot-store rule: b removed x after seeing a's add; a still holds
    x live and b's chain covers it, so the join drops it, as a merge does."""
    ns = []
    for i in range(3):
        d = str(tmp_path / str(i))
        init_identity(d)
        ns.append(Node(d, engine=ReferenceEngine()))
    a, b, j = ns
    try:
        a.put("k", {"s": Add("x"), "f": 1})
        b.put("k", {"s": Add("y")})
        _pull(b, a)
        b.put("k", {"s": Remove("x")})    # b saw a's add and removed it
        a.put("k", {"s": Add("z")})
        joined = _join_into(a, b, key="k")
        _pull(j, a)
        _pull(j, b)
        assert _canon(a, joined) == _canon(j, _blob(j, "k"))
        elems = dict(_canon(a, joined)["s"][1][1])
        assert b"\x05\x01x" not in elems and b"\x05\x01y" in elems and b"\x05\x01z" in elems
    finally:
        for n in ns:
            n.close()


@pytest.mark.parametrize("cut", [1, 3, 7, -1])
def test_a_garbled_blob_is_a_malformed_change(tmp_path, cut):
    d = str(tmp_path / "n")
    init_identity(d)
    with Node(d, engine=ReferenceEngine()) as n:
        n.put("k", {"f": "v", "s": Add(1), "c": Inc(2)})
        blob = _blob(n, "k")
        ids = n.store.actors.items
        fm, am = range(len(n.store.field_names)), range(len(ids))
        with pytest.raises(MalformedChange):
            join_blob(b"", blob[:cut], fm, am, ids)
        with pytest.raises(MalformedChange):
            join_blob(b"", blob, [], am, ids)          # a field outside the table
        with pytest.raises(MalformedChange):
            join_blob(b"", blob, fm, [], ids)          # an actor outside the table
