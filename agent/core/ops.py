"""Encoders for ops (docs/FORMAT.md, "Op"): what a node writes into a batch.

The `*_op` functions take the indexes and stamp already varint-encoded and
return the op's bytes: the write path encodes a put's stamp and indexes once
and calls these per field. The bytearray forms below are for everything else.
"""
from ..codec import encode_value, varint, zigzag

OP_LWW, OP_CTR, OP_MV, OP_ADD, OP_REM, OP_DEL, OP_ADDC = 1, 2, 3, 4, 5, 6, 7
OP_INC, OP_MVW, OP_ADDI, OP_RMV = 0x82, 0x83, 0x84, 0x85


def lww_op(k: bytes, f: bytes, stamp: bytes, a: bytes, value) -> bytes:
    return k + b"\x01" + f + stamp + a + encode_value(value)


def inc_op(k: bytes, f: bytes, a: bytes, delta: int) -> bytes:
    return k + b"\x82" + f + a + varint(zigzag(delta))


def mv_write_op(k: bytes, f: bytes, stamp: bytes, a: bytes, value) -> bytes:
    return k + b"\x83" + f + stamp + a + encode_value(value)


def set_add_op(k: bytes, f: bytes, stamp: bytes, a: bytes, value) -> bytes:
    """The local intent: `apply` gives it its prev (op 7)."""
    return k + b"\x84" + f + stamp + a + encode_value(value)


def set_remove_op(k: bytes, f: bytes, value) -> bytes:
    return k + b"\x85" + f + encode_value(value)


def delete_op(k: bytes, stamp: bytes) -> bytes:
    return k + b"\x06" + stamp


def lww(out, key, field, stamp, actor, value):
    out += lww_op(varint(key), varint(field), varint(stamp), varint(actor), value)


def inc(out, key, field, actor, delta):
    out += inc_op(varint(key), varint(field), varint(actor), delta)


def mv_write(out, key, field, stamp, actor, value):
    out += mv_write_op(varint(key), varint(field), varint(stamp), varint(actor), value)


def set_add(out, key, field, stamp, actor, value):
    out += set_add_op(varint(key), varint(field), varint(stamp), varint(actor), value)


def set_add_chained(out, key, field, stamp, actor, prev, value):
    """Op 7 as a change holds it (tests and vectors build merges with it):
    prev travels as stamp - prev, 0 for none. A prev at or above the stamp
    is written as stamp (back = 0 would mean none), which engines refuse."""
    out += (varint(key) + b"\x07" + varint(field) + varint(stamp) + varint(actor)
            + varint((stamp - prev if prev < stamp else stamp) if prev else 0)
            + encode_value(value))


def set_add_legacy(out, key, field, stamp, actor, value):
    """Op 4, as 0.2 wrote an add: still read."""
    out += varint(key) + b"\x04" + varint(field) + varint(stamp) + varint(actor) + encode_value(value)


def set_remove(out, key, field, value):
    out += set_remove_op(varint(key), varint(field), value)


def delete(out, key, stamp):
    out += delete_op(varint(key), varint(stamp))
