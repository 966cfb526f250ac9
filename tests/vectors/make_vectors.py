"""Writes tests/vectors/core.json from named scenarios run through the
reference engine. Run it only when a format or rule changes on purpose, then
review the diff: the vectors pin the bytes every engine must produce.

    python tests/vectors/make_vectors.py
"""
import json
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from agent.core import ops as O, reference as R  # noqa: E402
from agent.core.batch import build_batch, parse_apply_result, parse_merge_result  # noqa: E402
from agent.errors import AgentError  # noqa: E402
from agent.values import decode_record  # noqa: E402
from agent.codec import encode_value, put_varint  # noqa: E402

ACTORS = struct.pack("<QQQ", 0xA1, 0xB2, 0x0C)  # store actor table: index 0, 1, 2
FIELDS = ["f0", "f1", "f2", "f3"]
T = 1 << 40  # a stamp


def batch(ops, nops, blobs=(b"",), amap=(0, 1, 2), fmap=(0, 1, 2, 3)):
    return build_batch(ACTORS, list(fmap), list(amap), list(blobs), nops, bytes(ops))


def scenarios():
    o = bytearray()
    O.lww(o, 0, 0, T, 0, "first"); O.lww(o, 0, 0, T + 1, 1, "second")
    yield "lww_later_stamp_wins", "apply", batch(o, 2)
    o = bytearray()
    O.lww(o, 0, 0, T, 0, "from A1"); O.lww(o, 0, 0, T, 1, "from B2")
    yield "lww_tie_broken_by_actor_id", "merge", batch(o, 2)
    o = bytearray()
    O.inc(o, 0, 1, 0, 5); O.inc(o, 0, 1, 0, -2); O.inc(o, 0, 1, 1, 10)
    yield "counter_increments_resolve_to_totals", "apply", batch(o, 3)
    o = bytearray()
    O.mv_write(o, 0, 2, T, 0, "x")
    yield "mv_single_write", "apply", batch(o, 1)
    yield from _mv_concurrent()
    o = bytearray()
    O.set_add(o, 0, 3, T, 0, "red"); O.set_add(o, 0, 3, T, 1, "blue"); O.set_remove(o, 0, 3, "red")
    yield "set_add_and_observed_remove", "apply", batch(o, 3)
    yield from _set_chains()
    o = bytearray()
    O.lww(o, 0, 0, T, 0, "old"); O.delete(o, 0, T + 5); O.lww(o, 0, 0, T + 3, 1, "late but older")
    yield "delete_hides_older_writes_in_any_order", "merge", batch(o, 3)
    o = bytearray()
    O.delete(o, 0, T + 5); O.lww(o, 0, 1, T + 9, 0, "revived")
    yield "write_after_delete_revives", "merge", batch(o, 2)
    o = bytearray()
    O.lww(o, 0, 0, T, 0, "text"); O.inc(o, 0, 0, 0, 3)
    yield "greater_kind_wins_a_field", "apply", batch(o, 2)
    good = bytearray()
    O.lww(good, 0, 0, T, 0, "ok")
    yield "bad_version", "merge", b"\x09" + batch(good, 1)[1:]
    yield "truncated", "merge", batch(good, 1)[:-2]
    yield "unknown_op_code", "merge", batch(b"\x00\x09\x00", 1)
    yield "key_index_out_of_range", "merge", batch(b"\x05\x06\x01", 1)
    yield "string_not_utf8", "merge", batch(b"\x00\x01\x00\x01\x00\x05\x02\xff\xfe", 1)
    yield "lying_string_length", "merge", batch(b"\x00\x01\x00\x01\x00\x05\x7f", 1)
    yield "zero_stamp", "merge", batch(b"\x00\x06\x00", 1)
    yield "intent_in_merge", "merge", batch(b"\x00\x82\x00\x00\x02", 1)
    yield "trailing_bytes", "merge", batch(bytes(good) + b"\x00", 1)


def _set_chains():
    """Sets by causal context (docs/SEMANTICS.md, "Sets")."""
    o = bytearray()
    O.set_add(o, 0, 3, T, 0, "a"); O.set_add(o, 0, 3, T, 0, "b")   # one change: one prev
    O.set_add(o, 0, 3, T + 1, 0, "c")                             # prev T
    yield "set_local_adds_resolve_prev", "apply", batch(o, 3)
    o = bytearray()
    O.set_add_chained(o, 0, 3, T, 0, 0, "gone")
    put_varint(o, 0); o.append(O.OP_REM); put_varint(o, 3); o += encode_value("gone")
    put_varint(o, 1); put_varint(o, 0); put_varint(o, T)
    O.set_add_chained(o, 0, 3, T + 1, 0, T, "kept")
    yield "set_removed_element_forgotten_once_the_chain_passes_it", "merge", batch(o, 3)
    o = bytearray()
    O.set_add_chained(o, 0, 3, T + 2, 0, T + 1, "third")
    O.set_add_chained(o, 0, 3, T + 1, 0, T, "second")
    O.set_add_chained(o, 0, 3, T, 0, 0, "first")
    yield "set_chain_links_wait_until_they_connect", "merge", batch(o, 3)
    o = bytearray()
    O.set_add_legacy(o, 0, 3, T, 1, "old")
    put_varint(o, 0); o.append(O.OP_REM); put_varint(o, 3); o += encode_value("old")
    put_varint(o, 1); put_varint(o, 1); put_varint(o, T)
    O.set_add_chained(o, 0, 3, T + 1, 1, 0, "new")
    yield "set_legacy_add_keeps_its_tombstone", "merge", batch(o, 3)
    v1 = bytes.fromhex("01" "01" + struct.pack("<Q", T).hex() + "00" "01" "03" "04"
                       "01" + encode_value("v1").hex() + "01" "00" "01" "00")
    o = bytearray()
    O.set_add(o, 0, 3, T + 1, 0, "more")
    yield "set_version1_blob_is_read_and_written_as_version2", "apply", batch(o, 1, blobs=[v1])
    o = bytearray()
    O.set_add_chained(o, 0, 3, T, 0, T, "x")
    yield "set_add_prev_not_below_stamp", "merge", batch(o, 1)
    o = bytearray()
    O.set_add(o, 0, 3, T + 1, 0, "x"); O.set_add(o, 0, 3, T, 0, "y")
    yield "set_local_add_below_its_chain", "apply", batch(o, 2)


def _mv_concurrent():
    from agent.codec import encode_value, put_varint
    o = bytearray()
    for a, v in ((0, "x"), (1, "y")):  # MV ops with empty contexts: concurrent
        put_varint(o, 0); o.append(O.OP_MV); put_varint(o, 2); put_varint(o, T + a)
        put_varint(o, a); o += encode_value(v); put_varint(o, 0)
    yield "mv_concurrent_writes_all_kept", "merge", batch(o, 2)
    o2 = bytearray(o)
    O.mv_write(o2, 0, 2, T + 7, 2, "z")  # sees both, covers both
    yield "mv_later_write_covers_what_it_saw", "apply", batch(o2, 3)


def main():
    out = []
    for name, fn, data in scenarios():
        v = {"name": name, "fn": fn, "batch": data.hex()}
        try:
            res = getattr(R, fn)(data)
        except AgentError as e:
            v["error"] = type(e).__name__
        else:
            v["result"] = res.hex()
            blobs = (parse_apply_result if fn == "apply" else parse_merge_result)(res)[1]
            v["reads"] = [decode_record(b, FIELDS) for b in blobs]
        out.append(v)
    path = os.path.join(os.path.dirname(__file__), "core.json")
    with open(path, "w") as f:
        json.dump({"fields": FIELDS, "actors": ["a1", "b2", "0c"], "vectors": out}, f, indent=1)
        f.write("\n")
    print("wrote %d vectors to %s" % (len(out), path))


if __name__ == "__main__":
    main()
