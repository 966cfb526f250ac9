"""Varints and typed values, as docs/FORMAT.md writes them down.

Values are kept encoded (bytes) inside the engines: comparison and
re-encoding never need the Python object.
"""
import struct

from .errors import MalformedChange

T_NULL, T_FALSE, T_TRUE, T_INT, T_FLOAT, T_STR, T_BYTES = range(7)
U64 = (1 << 64) - 1
_F64 = struct.Struct("<d")
_pack_f64 = _F64.pack


def put_varint(out: bytearray, n: int) -> None:
    if n < 0 or n > U64:
        raise ValueError("varint out of range: %r" % (n,))
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


_SMALL = [bytes((i,)) for i in range(0x80)]


def varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    b = bytearray()
    put_varint(b, n)
    return bytes(b)


def get_varint(buf, pos: int):
    """Return (value, new_pos). Raises MalformedChange on truncation/overflow."""
    try:
        b = buf[pos]
    except IndexError:
        raise MalformedChange("truncated varint") from None
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while True:
        if pos >= len(buf):
            raise MalformedChange("truncated varint")
        b = buf[pos]
        pos += 1
        if shift == 63 and b > 1:
            raise MalformedChange("varint overflows 64 bits")
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise MalformedChange("varint longer than 10 bytes")


def zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def encode_value(v) -> bytes:
    """Encode a Python value (None, bool, int, float, str, bytes)."""
    if v is None:
        return b"\x00"
    if v is True:
        return b"\x02"
    if v is False:
        return b"\x01"
    t = type(v)
    if t is int:
        if not -(1 << 63) <= v < (1 << 63):
            raise ValueError("integer outside the signed 64-bit range: %d" % v)
        return b"\x03" + varint(zigzag(v))
    if t is float:
        return b"\x04" + _pack_f64(v)
    if t is str:
        raw = v.encode("utf-8")
        return b"\x05" + varint(len(raw)) + raw
    if t is bytes or t is bytearray:
        return b"\x06" + varint(len(v)) + bytes(v)
    raise ValueError("cannot store a value of type %s" % t.__name__)


def skip_value(buf, pos: int) -> int:
    """Validate the value at pos and return the position after it."""
    if pos >= len(buf):
        raise MalformedChange("truncated value")
    tag = buf[pos]
    pos += 1
    if tag <= T_TRUE:
        return pos
    if tag == T_INT:
        return get_varint(buf, pos)[1]
    if tag == T_FLOAT:
        if pos + 8 > len(buf):
            raise MalformedChange("truncated float")
        return pos + 8
    if tag == T_STR or tag == T_BYTES:
        n, pos = get_varint(buf, pos)
        end = pos + n
        if end > len(buf):
            raise MalformedChange("string length runs past the end")
        if tag == T_STR:
            try:
                bytes(buf[pos:end]).decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedChange("string is not UTF-8") from None
        return end
    raise MalformedChange("unknown value tag %d" % tag)


def decode_value(buf, pos: int = 0):
    """Return (python_value, new_pos)."""
    tag = buf[pos]
    if tag == T_STR:
        n, p = get_varint(buf, pos + 1)
        return bytes(buf[p:p + n]).decode("utf-8"), p + n
    if tag == T_INT:
        n, p = get_varint(buf, pos + 1)
        return unzigzag(n), p
    if tag == T_FLOAT:
        return _F64.unpack_from(buf, pos + 1)[0], pos + 9
    if tag == T_TRUE:
        return True, pos + 1
    if tag == T_FALSE:
        return False, pos + 1
    if tag == T_NULL:
        return None, pos + 1
    if tag == T_BYTES:
        n, p = get_varint(buf, pos + 1)
        return bytes(buf[p:p + n]), p + n
    raise MalformedChange("unknown value tag %d" % tag)
