"""Encoders for ops (docs/FORMAT.md, "Op"): what a node writes into a batch."""
from ..codec import encode_value, put_varint, zigzag

OP_LWW, OP_CTR, OP_MV, OP_ADD, OP_REM, OP_DEL = 1, 2, 3, 4, 5, 6
OP_INC, OP_MVW, OP_RMV = 0x82, 0x83, 0x85


def lww(out, key, field, stamp, actor, value):
    put_varint(out, key); out.append(OP_LWW); put_varint(out, field)
    put_varint(out, stamp); put_varint(out, actor); out += encode_value(value)


def inc(out, key, field, actor, delta):
    put_varint(out, key); out.append(OP_INC); put_varint(out, field)
    put_varint(out, actor); put_varint(out, zigzag(delta))


def mv_write(out, key, field, stamp, actor, value):
    put_varint(out, key); out.append(OP_MVW); put_varint(out, field)
    put_varint(out, stamp); put_varint(out, actor); out += encode_value(value)


def set_add(out, key, field, stamp, actor, value):
    put_varint(out, key); out.append(OP_ADD); put_varint(out, field)
    put_varint(out, stamp); put_varint(out, actor); out += encode_value(value)


def set_remove(out, key, field, value):
    put_varint(out, key); out.append(OP_RMV); put_varint(out, field)
    out += encode_value(value)


def delete(out, key, stamp):
    put_varint(out, key); out.append(OP_DEL); put_varint(out, stamp)
