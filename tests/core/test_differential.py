"""Differential tests: the wasm core against reference.py, byte for byte.

Hypothesis generates histories (several replicas, every field kind, kind
conflicts, deletes, intents through apply, the resolved ops merged elsewhere
in random orders with duplicates) and malformed batches (truncated, wrong
version, lying lengths, random bytes, bit flips of valid batches). Both
engines must give the same bytes, or raise the same error class.

The hypothesis seed is printed in the pytest header by tests/conftest.py
(replay: pytest --hypothesis-seed=N); failing examples print a reproduction
blob. MYCELIUM_FUZZ_EXAMPLES=N runs N examples per test instead of 150.
"""
import os
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.codec import put_varint
from agent.core import ops, reference
from agent.core.batch import build_batch, parse_apply_result, parse_merge_result
from agent.errors import CoreError, MalformedChange

wasm = pytest.importorskip("agent.core.wasm", reason="no wasmtime library for this platform",
                           exc_type=ImportError)

EXAMPLES = int(os.environ.get("MYCELIUM_FUZZ_EXAMPLES") or 150)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, print_blob=True, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def eng():
    e = wasm.WasmEngine()
    yield e
    e.close()


def outcome(fn, batch):
    """('ok', bytes) or ('err', class name)."""
    try:
        return ("ok", fn(batch))
    except MalformedChange:
        return ("err", "MalformedChange")
    except CoreError:
        return ("err", "CoreError")


def same(eng, kind, batch):
    ref = outcome(getattr(reference, kind), batch)
    got = outcome(getattr(eng, kind), batch)
    assert got == ref, "engines differ on %s of %s" % (kind, batch.hex())
    return ref


# ---------------------------------------------------------------- histories

N_ACTORS = 4
ACTOR_IDS = [0x1111, 0x0FFF_FFFF_FFFF_FFFF, 0x2222, 0xFFFF_FFFF_FFFF_FFFF]
N_FIELDS = 5
N_KEYS = 3
ID_TABLE = struct.pack("<%dQ" % N_ACTORS, *ACTOR_IDS)

values = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, 1, -1, 7, (1 << 63) - 1, -(1 << 63)]),
    st.sampled_from([0.0, -0.0, 1.5, float("inf")]),
    st.sampled_from(["", "a", "b", "ab", "\u00e9", "\U0001F344", "\x00"]),
    st.sampled_from([b"", b"a", b"\x00", b"\xff\xfe", b"ab"]),
)
stamps = st.integers(1, 24) | st.sampled_from([1 << 40, (1 << 64) - 1])
deltas = st.sampled_from([1, 2, -1, -3, 100, (1 << 63) - 1, -(1 << 63)])

local_op = st.one_of(
    st.tuples(st.just("lww"), st.integers(0, N_KEYS - 1), st.integers(0, N_FIELDS - 1), stamps, values),
    st.tuples(st.just("inc"), st.integers(0, N_KEYS - 1), st.integers(0, N_FIELDS - 1), deltas),
    st.tuples(st.just("mvw"), st.integers(0, N_KEYS - 1), st.integers(0, N_FIELDS - 1), stamps, values),
    st.tuples(st.just("add"), st.integers(0, N_KEYS - 1), st.integers(0, N_FIELDS - 1), stamps, values),
    st.tuples(st.just("rmv"), st.integers(0, N_KEYS - 1), st.integers(0, N_FIELDS - 1), values),
    st.tuples(st.just("del"), st.integers(0, N_KEYS - 1), stamps),
    # raw resolved ops inside apply, with contexts drawn at random
    st.tuples(st.just("rawmv"), st.integers(0, N_KEYS - 1), st.integers(0, N_FIELDS - 1), stamps,
              values, st.lists(st.tuples(st.integers(0, N_ACTORS - 1), stamps), max_size=3)),
    st.tuples(st.just("rawrem"), st.integers(0, N_KEYS - 1), st.integers(0, N_FIELDS - 1), values,
              st.lists(st.tuples(st.integers(0, N_ACTORS - 1), stamps), max_size=3)),
    st.tuples(st.just("rawctr"), st.integers(0, N_KEYS - 1), st.integers(0, N_FIELDS - 1),
              st.integers(0, 30), st.integers(0, 50), st.integers(0, 50)),
    # chained adds (op 7) with any prev, legacy adds (op 4)
    st.tuples(st.just("rawadd"), st.integers(0, N_KEYS - 1), st.integers(0, N_FIELDS - 1), stamps,
              st.integers(0, 30) | st.sampled_from([(1 << 64) - 1]), values),
    st.tuples(st.just("oldadd"), st.integers(0, N_KEYS - 1), st.integers(0, N_FIELDS - 1), stamps,
              values),
)

step = st.one_of(
    st.tuples(st.just("local"), st.integers(0, 3), st.permutations(range(N_FIELDS)),
              st.permutations(range(N_ACTORS)), st.integers(1, N_ACTORS),
              st.lists(local_op, min_size=1, max_size=6)),
    st.tuples(st.just("merge"), st.integers(0, 3), st.lists(st.integers(0, 1000), max_size=4)),
)


def local_batch(blobs, fperm, aperm, na, me, spec):
    """fperm: change field index -> store field id; aperm[:na] the actor map
    (it always holds the author `me`)."""
    amap = list(aperm[:na])
    if me not in amap:
        amap[-1] = me
    fi = {g: i for i, g in enumerate(fperm)}
    ai = {a: i for i, a in enumerate(amap)}
    me_i = ai[me]
    out = bytearray()
    for o in spec:
        t, k = o[0], o[1]
        if t == "lww":
            ops.lww(out, k, fi[o[2]], o[3], me_i, o[4])
        elif t == "inc":
            ops.inc(out, k, fi[o[2]], me_i, o[3])
        elif t == "mvw":
            ops.mv_write(out, k, fi[o[2]], o[3], me_i, o[4])
        elif t == "add":
            ops.set_add(out, k, fi[o[2]], o[3], me_i, o[4])
        elif t == "rmv":
            ops.set_remove(out, k, fi[o[2]], o[3])
        elif t == "del":
            ops.delete(out, k, o[2])
        elif t in ("rawmv", "rawrem"):
            ctx = [(ai[a], h) for a, h in o[-1] if a in ai]
            put_varint(out, k)
            if t == "rawmv":
                out.append(3); put_varint(out, fi[o[2]]); put_varint(out, o[3])
                put_varint(out, me_i); out += reference_value(o[4])
            else:
                out.append(5); put_varint(out, fi[o[2]]); out += reference_value(o[3])
            put_varint(out, len(ctx))
            for a, h in ctx:
                put_varint(out, a); put_varint(out, h)
        elif t == "rawadd":
            ops.set_add_chained(out, k, fi[o[2]], o[3], me_i, o[4], o[5])
        elif t == "oldadd":
            ops.set_add_legacy(out, k, fi[o[2]], o[3], me_i, o[4])
        elif t == "rawctr":
            put_varint(out, k); out.append(2); put_varint(out, fi[o[2]])
            put_varint(out, me_i); put_varint(out, o[3]); put_varint(out, o[4]); put_varint(out, o[5])
    return build_batch(ID_TABLE, list(fperm), amap, blobs, len(spec), bytes(out))


def reference_value(v):
    from agent.codec import encode_value
    return encode_value(v)


def run_history(eng, steps, check_join):
    replicas = [[b""] * N_KEYS for _ in range(4)]
    seen = [[] for _ in range(4)]  # changes merged or authored, per replica
    changes = []  # (fmap, amap, nops, ops) of resolved local batches
    batches = []
    for s in steps:
        if s[0] == "local":
            _, r, fperm, aperm, na, spec = s
            b = local_batch(replicas[r], fperm, aperm, na, r, spec)
            batches.append(b)
            res = same(eng, "apply", b)
            if res[0] == "err":
                continue
            _, blobs, amap, nops, rops = parse_apply_result(res[1])
            replicas[r] = blobs
            changes.append((list(fperm), amap, nops, rops))
            seen[r].append(len(changes) - 1)
        else:
            _, r, picks = s
            if not changes:
                continue
            for p in picks:
                c = p % len(changes)
                fmap, amap, nops, rops = changes[c]
                b = build_batch(ID_TABLE, fmap, amap, replicas[r], nops, rops)
                batches.append(b)
                res = same(eng, "merge", b)
                assert res[0] == "ok", "a resolved change failed to merge"
                replicas[r] = parse_merge_result(res[1])[1]
                seen[r].append(c)
    if check_join and changes:
        # every replica merges every change (in its own order, some twice):
        # a join gives them all the same blobs
        rng = random.Random(len(changes))
        finals = []
        for r in range(4):
            order = list(range(len(changes))) + rng.sample(range(len(changes)), min(2, len(changes)))
            rng.shuffle(order)
            state = list(replicas[r])
            for c in order:
                fmap, amap, nops, rops = changes[c]
                b = build_batch(ID_TABLE, fmap, amap, state, nops, rops)
                res = same(eng, "merge", b)
                assert res[0] == "ok"
                state = parse_merge_result(res[1])[1]
            finals.append(state)
        assert all(f == finals[0] for f in finals), "merge is not a join here"
    return batches


@SETTINGS
@given(st.lists(step, min_size=1, max_size=12))
def test_histories_identical(eng, steps):
    run_history(eng, steps, check_join=False)


@settings(SETTINGS, max_examples=max(60, EXAMPLES // 3))
@given(st.lists(step, min_size=1, max_size=10))
def test_histories_converge(eng, steps):
    run_history(eng, steps, check_join=True)


# ---------------------------------------------------------------- malformed

@SETTINGS
@given(st.lists(step, min_size=1, max_size=6), st.data())
def test_mutated_batches_same_error(eng, steps, data):
    batches = run_history(eng, steps, check_join=False)
    if not batches:
        return
    b = bytearray(data.draw(st.sampled_from(batches)))
    how = data.draw(st.sampled_from(["trunc", "flip", "flips", "version", "byte", "insert", "extend"]))
    if how == "trunc":
        b = b[:data.draw(st.integers(0, len(b) - 1))]
    elif how == "flip":
        i = data.draw(st.integers(0, len(b) * 8 - 1))
        b[i // 8] ^= 1 << (i % 8)
    elif how == "flips":
        for _ in range(data.draw(st.integers(2, 6))):
            i = data.draw(st.integers(0, len(b) * 8 - 1))
            b[i // 8] ^= 1 << (i % 8)
    elif how == "version":
        b[0] = data.draw(st.integers(0, 255).filter(lambda v: v != 1))
    elif how == "byte":
        b[data.draw(st.integers(0, len(b) - 1))] = data.draw(st.integers(0, 255))
    elif how == "insert":
        i = data.draw(st.integers(0, len(b)))
        b[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    else:
        b += data.draw(st.binary(min_size=1, max_size=4))
    b = bytes(b)
    same(eng, "merge", b)
    same(eng, "apply", b)


@SETTINGS
@given(st.binary(max_size=64), st.booleans())
def test_random_bytes_same_error(eng, raw, versioned):
    b = (b"\x01" + raw) if versioned else raw
    same(eng, "merge", b)
    same(eng, "apply", b)


def _batch(blobs=(b"",), ops_bytes=b"", nops=0, amap=(0, 1), fmap=(0, 1, 2)):
    return build_batch(struct.pack("<2Q", 5, 9), list(fmap), list(amap), list(blobs), nops, ops_bytes)


def test_lying_lengths(eng):
    cases = [
        b"\x01\xff\xff\xff\xff\x0f",                       # actor table longer than the batch
        b"\x01\x00\x05\x00",                               # field map count runs past the end
        b"\x01\x00\x00\x00\x01\x7f",                       # blob length past the end
        b"\x01\x00\x00\x00\x00\x05",                       # nops larger than the ops
        b"\x01\x00\x00\x00\x00\x00\x00",                   # trailing bytes
        b"\x01" + b"\x80" * 9 + b"\x02",                   # varint overflows 64 bits
        b"\x01" + b"\x80" * 9 + b"\x01",                   # 10-byte varint = 2^63 actors
        b"\x01\x80\x00\x00\x00\x00\x00",                   # overlong zero is accepted
        b"\x01\x00\x00\x00\x00\x00",                       # the smallest valid batch
    ]
    # a context count that lies (larger than the whole batch)
    o = bytearray()
    put_varint(o, 0); o.append(5); put_varint(o, 0); o += b"\x00"; put_varint(o, 1 << 40)
    cases.append(_batch(ops_bytes=bytes(o), nops=1))
    o = bytearray()
    put_varint(o, 0); o.append(3); put_varint(o, 0); put_varint(o, 3); put_varint(o, 0); o += b"\x00"
    put_varint(o, 3); put_varint(o, 1); put_varint(o, 4)
    cases.append(_batch(ops_bytes=bytes(o), nops=1))
    # blob lies: stamp table, refs, counts, trailing bytes, unknown kind
    for blob in [b"\x01\x05", b"\x01\x00\x01\x00", b"\x01\x00\x00\x01\x00\x07",
                 b"\x01\x00\x00\x00\x00", b"\x02\x00\x00\x00", b"\x01\x00\x00\x02\x00\x01\x00",
                 b"\x01\x00\x00\x01\x00\x04\x05\x00"]:
        cases.append(_batch(blobs=[blob]))
    for c in cases:
        same(eng, "merge", c)
        same(eng, "apply", c)


def test_utf8_rules(eng):
    bad = [b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe0\x9f\xbf", b"\x80",
           b"\xf0\x8f\xbf\xbf", b"\xc2", b"\xe2\x82", b"\xf5\x80\x80\x80", b"\xff"]
    good = ["\x00", "\u07ff", "\uffff", "\U0010ffff", "\ud7ff", "\ue000"]
    for raw in bad + [g.encode("utf-8") for g in good]:
        o = bytearray()
        put_varint(o, 0); o.append(1); put_varint(o, 0); put_varint(o, 3); put_varint(o, 0)
        o.append(5); put_varint(o, len(raw)); o += raw
        b = _batch(ops_bytes=bytes(o), nops=1)
        r = same(eng, "merge", b)
        assert (r[0] == "ok") == (raw not in bad)


def test_counter_overflow_is_core_error_and_engine_goes_on(eng):
    o = bytearray()
    ops.inc(o, 0, 0, 0, (1 << 63) - 1)
    ops.inc(o, 0, 0, 0, (1 << 63) - 1)
    ops.inc(o, 0, 0, 0, 2)
    b = _batch(ops_bytes=bytes(o), nops=3)
    assert same(eng, "apply", b) == ("err", "CoreError")
    with pytest.raises(CoreError):
        eng.apply(b)
    o = bytearray()
    ops.inc(o, 0, 0, 0, -5)
    ok = _batch(ops_bytes=bytes(o), nops=1)
    assert eng.apply(ok) == reference.apply(ok)


def test_trap_replaces_instance(eng):
    good = bytearray()
    ops.lww(good, 0, 0, 7, 1, "x")
    good = _batch(ops_bytes=bytes(good), nops=1)
    expect = reference.apply(good)
    assert eng.apply(good) == expect
    with pytest.raises(CoreError):
        eng._raw("apply", 0xFFFFFFF0, 64)  # input outside linear memory: a trap
    assert eng._store is None
    assert eng.apply(good) == expect
    assert eng.merge(good) == reference.merge(good)


def test_blob_actor_outside_the_table_is_malformed_in_both(eng):
    """An LWW blob entry naming an actor index outside the batch's actor
    table is refused as MalformedChange by both engines (the reference once
    raised a bare IndexError here)."""
    blob = bytes([1, 1]) + struct.pack("<Q", 3) + bytes([0, 1, 0, 1, 1, 9, 0])
    o = bytearray()
    ops.lww(o, 0, 0, 7, 0, "x")
    b = _batch(blobs=[blob], ops_bytes=bytes(o), nops=1)
    with pytest.raises(MalformedChange):
        reference.merge(b)
    with pytest.raises(MalformedChange):
        eng.merge(b)
    # the same blob with no op touching it round-trips in both
    b = _batch(blobs=[blob])
    assert eng.merge(b) == reference.merge(b)


def test_big_merge_identical(eng):
    """A 10K-op batch: memory grows, the bytes still match."""
    rng = random.Random(20240611)
    nkeys = 200
    extra = 0
    o = bytearray()
    for i in range(10000):
        k = rng.randrange(nkeys)
        c = rng.randrange(5)
        h = rng.randrange(1, 5000)
        if c == 0:
            ops.lww(o, k, 0, h, rng.randrange(2), rng.randrange(100))
        elif c == 1:
            put_varint(o, k); o.append(2); put_varint(o, 1); put_varint(o, rng.randrange(2))
            put_varint(o, rng.choice([0, 0, h])); put_varint(o, rng.randrange(99)); put_varint(o, 0)
        elif c == 2:
            put_varint(o, k); o.append(3); put_varint(o, 2); put_varint(o, h); put_varint(o, 0)
            o += b"\x05\x01" + bytes([97 + rng.randrange(26)]); put_varint(o, 1)
            put_varint(o, 1); put_varint(o, rng.randrange(1, 5000))
        elif c == 3:
            f = 1 if rng.random() < 0.1 else 2
            if rng.random() < 0.2:
                ops.set_add_legacy(o, k, f, h, rng.randrange(2), rng.randrange(300))
            else:
                ops.set_add_chained(o, k, f, h, rng.randrange(2), rng.choice([0, h - 1, rng.randrange(h)]),
                                    rng.randrange(300))
            if rng.random() < 0.3:
                put_varint(o, k); o.append(5); put_varint(o, f); o += reference_value(rng.randrange(300))
                put_varint(o, 1); put_varint(o, rng.randrange(2)); put_varint(o, rng.randrange(1, 5000))
                extra += 1
        else:
            if rng.random() < 0.05:
                ops.delete(o, k, h)
            else:
                ops.lww(o, k, 0, h, 1, "s%d" % rng.randrange(50))
    b = _batch(blobs=[b""] * nkeys, ops_bytes=bytes(o), nops=10000 + extra)
    assert eng.merge(b) == reference.merge(b)
    assert eng.apply(b) == reference.apply(b)


# ---------------------------------------------------------------- odd blobs

def _blob_value(draw):
    return draw(st.sampled_from([b"\x00", b"\x02", b"\x03\x04", b"\x05\x01a", b"\x05\x00",
                                 b"\x06\x01\x00", b"\x04" + b"\x00" * 8]))


@st.composite
def odd_blobs(draw):
    """Blobs that decode but are not canonical: unsorted or duplicated stamp
    tables (zeros too), duplicate fields and entries, entries out of order,
    actor indexes anywhere. Both engines must read them the same way."""
    n = draw(st.integers(0, 4))
    table = [draw(st.sampled_from([0, 1, 3, 5, 9, 1 << 63])) for _ in range(n)]
    ref = st.integers(0, n)
    version = draw(st.integers(1, 2))
    out = bytearray((version,))
    put_varint(out, n)
    for s in table:
        out += struct.pack("<Q", s)
    put_varint(out, draw(ref))
    nf = draw(st.integers(0, 4))
    put_varint(out, nf)
    stamp_of = [0] + table
    for _ in range(nf):
        put_varint(out, draw(st.integers(0, 3)))
        kind = draw(st.integers(1, 4))
        out.append(kind)
        if kind == 1:
            i = draw(ref)
            put_varint(out, i)
            if stamp_of[i]:
                put_varint(out, draw(st.integers(0, 1)))
                out += _blob_value(draw)
            continue
        if kind == 4 and version == 2:   # chains: duplicates, disorder, any stamps
            nc = draw(st.integers(0, 2))
            put_varint(out, nc)
            for _ in range(nc):
                for x in (draw(st.integers(0, 2)), draw(ref), draw(ref)):
                    put_varint(out, x)
                nl = draw(st.integers(0, 2))
                put_varint(out, nl)
                for _ in range(2 * nl):
                    put_varint(out, draw(ref))
        cnt = draw(st.integers(0, 3))
        put_varint(out, cnt)
        for _ in range(cnt):
            if kind == 2:
                for x in (draw(st.integers(0, 2)), draw(ref), draw(st.integers(0, 9)), draw(st.integers(0, 9))):
                    put_varint(out, x)
            elif kind == 3:
                w, c = draw(ref), draw(ref)
                for x in (draw(st.integers(0, 2)), w, c):
                    put_varint(out, x)
                if stamp_of[w] > stamp_of[c]:
                    out += _blob_value(draw)
            else:
                out += _blob_value(draw)
                ne = draw(st.integers(0, 3))
                put_varint(out, ne)
                for _ in range(ne):
                    for x in (draw(st.integers(0, 2)), draw(ref), draw(ref)):
                        put_varint(out, x)
    return bytes(out)


@SETTINGS
@given(st.lists(odd_blobs(), min_size=1, max_size=2),
       st.lists(local_op, max_size=5), st.permutations(range(N_FIELDS)),
       st.lists(st.integers(0, N_ACTORS - 1), min_size=1, max_size=6))
def test_odd_blobs_identical(eng, blobs, spec, fperm, amap):
    """amap may repeat actors (the inverse map takes the last index) and
    miss some (contexts then extend it)."""
    spec = [o for o in spec if o[1] < len(blobs)]
    b = local_batch(blobs, fperm, amap, len(amap), amap[0], spec)
    same(eng, "apply", b)
    m = build_batch(ID_TABLE, list(fperm), amap, blobs, 0, b"")
    same(eng, "merge", m)
