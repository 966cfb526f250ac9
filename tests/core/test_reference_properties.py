"""Merge is commutative, associative and idempotent; replicas converge
whatever the delivery order, with duplicates and re-deliveries."""
import struct

from hypothesis import given, settings, strategies as st, HealthCheck

from agent.core import ops as O, reference as R
from agent.core.batch import build_batch, parse_apply_result, parse_merge_result
from agent.values import decode_record, is_visible

FIELD_KINDS = ["lww", "counter", "mv", "set"]
KEYS = 3
FMAP = [0, 1, 2, 3, 4]          # field 4 is written with a random kind
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(["a", "b", "c"]),
                   st.floats(allow_nan=False, width=64), st.binary(max_size=3))

step = st.tuples(
    st.integers(0, 4),                      # replica (taken modulo the replica count)
    st.integers(0, KEYS - 1),               # key
    st.integers(0, 4),                      # field
    st.sampled_from(FIELD_KINDS + ["delete", "remove"]),
    VALUES,
    st.integers(-3, 3),                     # counter delta
    st.lists(st.integers(0, 200), max_size=4),  # changes to pull in first
)


def _actor_table(n):
    return b"".join(struct.pack("<Q", 0x1000 + 7919 * i) for i in range(n))


class Replica:
    def __init__(self, idx, table):
        self.idx = idx
        self.table = table
        self.blobs = [b""] * KEYS

    def local(self, key, field, kind, value, delta, stamp):
        o = bytearray()
        if field == 4 or kind in ("delete", "remove"):
            pass
        else:
            kind = FIELD_KINDS[field] if kind not in ("delete", "remove") else kind
        if kind == "lww":
            O.lww(o, 0, field, stamp, 0, value)
        elif kind == "counter":
            O.inc(o, 0, field, 0, delta)
        elif kind == "mv":
            O.mv_write(o, 0, field, stamp, 0, value)
        elif kind == "set":
            O.set_add(o, 0, field, stamp, 0, value if value is not None else "a")
        elif kind == "remove":
            O.set_remove(o, 0, 3, value if value is not None else "a")
        else:
            O.delete(o, 0, stamp)
        out = R.apply(build_batch(self.table, FMAP, [self.idx], [self.blobs[key]], 1, o))
        _, blobs, amap, nops, rops = parse_apply_result(out)
        self.blobs[key] = blobs[0]
        return (key, amap, nops, rops)

    def merge(self, change):
        key, amap, nops, rops = change
        out = R.merge(build_batch(self.table, FMAP, amap, [self.blobs[key]], nops, rops))
        self.blobs[key] = parse_merge_result(out)[1][0]


def run_history(n, steps):
    table = _actor_table(n)
    reps = [Replica(i, table) for i in range(n)]
    changes = []
    for t, (r, key, field, kind, value, delta, pulls) in enumerate(steps):
        rep = reps[r % n]
        for p in pulls:
            if changes:
                rep.merge(changes[p % len(changes)])
        changes.append(rep.local(key, field, kind, value, delta, (t + 1) << 16))
    return reps, changes


@settings(max_examples=150, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 5), st.lists(step, min_size=1, max_size=25), st.randoms(use_true_random=False))
def test_replicas_converge_whatever_the_delivery_order(n, steps, rnd):
    reps, changes = run_history(n, steps)
    for rep in reps:
        order = changes + [rnd.choice(changes) for _ in range(len(changes) // 2)]  # duplicates
        rnd.shuffle(order)
        for c in order:
            rep.merge(c)
    for rep in reps[1:]:
        assert rep.blobs == reps[0].blobs
    for b in reps[0].blobs:  # the fast visibility check agrees with a full read
        assert is_visible(b) == (decode_record(b, list(range(5))) is not None)


@settings(max_examples=150, deadline=None, print_blob=True)
@given(st.integers(2, 4), st.lists(step, min_size=2, max_size=20), st.data())
def test_merge_is_commutative_associative_and_idempotent(n, steps, data):
    _, changes = run_history(n, steps)
    table = _actor_table(n)
    picks = data.draw(st.lists(st.integers(0, len(changes) - 1), min_size=2, max_size=4))
    chosen = [changes[i] for i in picks]

    def fold(seq):
        r = Replica(0, table)
        for c in seq:
            r.merge(c)
        return r.blobs

    base = fold(chosen)
    assert fold(list(reversed(chosen))) == base                    # commutative
    assert fold(chosen[1:] + chosen[:1]) == base                   # associative (regrouped)
    assert fold(chosen + chosen) == base                           # idempotent
    assert fold([chosen[0]] + chosen) == base                      # re-delivery


def test_blob_encoding_round_trips():
    reps, _ = run_history(3, [(i % 3, i % KEYS, i % 5, k, "v", 1, [])
                              for i, k in enumerate(FIELD_KINDS * 4 + ["remove", "delete"])])
    for rep in reps:
        for b in rep.blobs:
            assert R.encode_blob(R.decode_blob(b)) == b
