"""Batch version 2: many changes merged in one engine call give the same
bytes as merging them one by one, in both engines; bad bytes are refused
by both with the same error class."""
import struct

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from agent.core import available_engines, ops as O, reference as R
from agent.core.batch import build_batch, build_multi, parse_apply_result, parse_merge_result
from agent.errors import MalformedChange, CoreError

KEYS = 3
FMAP = [0, 1, 2, 3]
TABLE = b"".join(struct.pack("<Q", 0x51 + 977 * i) for i in range(4))


ENGINES = available_engines()

op = st.tuples(st.integers(0, 3), st.integers(0, KEYS - 1), st.integers(0, 5),
               st.sampled_from(["x", "y", "z"]), st.integers(-2, 3))


def make_changes(steps):
    """Each step: an actor writes one op locally; returns the resolved changes."""
    blobs = [[b""] * KEYS for _ in range(4)]
    changes = []
    for t, (actor, key, kind, value, delta) in enumerate(steps):
        o = bytearray()
        stamp = (t + 1) << 16
        if kind == 0:
            O.lww(o, 0, 0, stamp, 0, value)
        elif kind == 1:
            O.inc(o, 0, 1, 0, delta)
        elif kind == 2:
            O.mv_write(o, 0, 2, stamp, 0, value)
        elif kind == 3:
            O.set_add(o, 0, 3, stamp, 0, value)
        elif kind == 4:
            O.set_remove(o, 0, 3, value)
        else:
            O.delete(o, 0, stamp)
        out = R.apply(build_batch(TABLE, FMAP, [actor], [blobs[actor][key]], 1, o))
        _, nb, amap, nops, rops = parse_apply_result(out)
        blobs[actor][key] = nb[0]
        changes.append((key, amap, nops, rops))
    return changes


def multi(changes, base):
    return build_multi(TABLE, base, [(FMAP, amap, [key], nops, rops)
                                     for key, amap, nops, rops in changes])


def outcome(fn, data):
    try:
        return fn(data)
    except (MalformedChange, CoreError) as e:
        return type(e).__name__


@settings(max_examples=120, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=20), st.randoms(use_true_random=False))
def test_one_call_merge_equals_merging_change_by_change(steps, rnd):
    changes = make_changes(steps)
    rnd.shuffle(changes)
    base = [b""] * KEYS
    seq = list(base)
    for key, amap, nops, rops in changes:
        out = R.merge(build_batch(TABLE, FMAP, amap, [seq[key]], nops, rops))
        seq[key] = parse_merge_result(out)[1][0]
    data = multi(changes, base)
    for eng in ENGINES:
        max_h, blobs = parse_merge_result(eng.merge(data))
        assert blobs == seq, eng.name


@settings(max_examples=150, deadline=None, print_blob=True)
@given(st.lists(op, min_size=1, max_size=6), st.data())
def test_damaged_multi_batch_is_refused_alike(steps, data):
    good = multi(make_changes(steps), [b""] * KEYS)
    how = data.draw(st.sampled_from(["cut", "flip", "tail"]))
    if how == "cut":
        bad = good[:data.draw(st.integers(0, len(good) - 1))]
    elif how == "flip":
        i = data.draw(st.integers(0, len(good) - 1))
        bad = good[:i] + bytes([good[i] ^ data.draw(st.integers(1, 255))]) + good[i + 1:]
    else:
        bad = good + b"\x00"
    results = {eng.name: outcome(eng.merge, bad) for eng in ENGINES}
    assert len(set(map(repr, results.values()))) == 1, results


def test_apply_refuses_a_multi_batch():
    data = multi(make_changes([(0, 0, 0, "x", 0)]), [b""] * KEYS)
    for eng in ENGINES:
        with pytest.raises(MalformedChange):
            eng.apply(data)
