"""Changes: the unit the op log stores and sync sends (docs/FORMAT.md).

A change is a batch of ops from one actor with its own tables of keys, field
names and actor ids, so it means the same on every device. Its id is the
blake2b-128 hash of its bytes, which it also carries at its end.
"""
import struct

from .codec import get_varint, put_varint, varint
from .errors import MalformedChange

__all__ = ["CHANGE_VERSION", "Change", "build_change", "parse_change", "HASH_LEN"]

CHANGE_VERSION = 1
HASH_LEN = 16
MAX_CHANGE = 16 * 1024 * 1024
_u64 = struct.Struct("<Q")
try:  # the built-in module: hashlib would load OpenSSL (about 4 MB of RSS)
    from _blake2 import blake2b as _blake
except ImportError:  # pragma: no cover
    from hashlib import blake2b as _blake


class Change:
    __slots__ = ("actor", "seq", "hlc", "keys", "fields", "actors",
                 "nops", "ops", "raw", "hash")

    def __repr__(self):
        return "Change(actor=%016x seq=%d ops=%d)" % (self.actor, self.seq, self.nops)


def string_table(strings) -> bytes:
    """The encoded key or field-name table of a change."""
    out = bytearray()
    put_varint(out, len(strings))
    for s in strings:
        raw = s.encode("utf-8")
        put_varint(out, len(raw))
        out += raw
    return bytes(out)


def actor_table(actors) -> bytes:
    return varint(len(actors)) + b"".join(_u64.pack(a) for a in actors)


def build_change(actor: int, seq: int, hlc: int, keys, fields, actors,
                 nops: int, ops) -> bytes:
    """keys and fields are lists of str; actors a list of 64-bit ids."""
    return build_change_raw(actor, seq, hlc, string_table(keys), string_table(fields),
                            actor_table(actors), nops, ops)


def build_change_raw(actor: int, seq: int, hlc: int, keys_t: bytes, fields_t: bytes,
                     actors_t: bytes, nops: int, ops) -> bytes:
    """As build_change, with the tables already encoded (the write path
    caches them)."""
    body = b"".join((b"\x01", _u64.pack(actor), varint(seq), varint(hlc), keys_t, fields_t,
                     actors_t, varint(nops), ops))
    return body + _blake(body, digest_size=HASH_LEN).digest()


def _strings(buf, p, what):
    n, p = get_varint(buf, p)
    if n > len(buf):
        raise MalformedChange("%s count runs past the end" % what)
    out = []
    for _ in range(n):
        ln, p = get_varint(buf, p)
        if p + ln > len(buf):
            raise MalformedChange("%s runs past the end" % what)
        try:
            out.append(bytes(buf[p:p + ln]).decode("utf-8"))
        except UnicodeDecodeError:
            raise MalformedChange("%s is not UTF-8" % what) from None
        p += ln
    return out, p


_tables = {}


def _field_table(buf, p):
    """The field-name table, decoded once per distinct table: changes from
    the same writer nearly always carry the same one."""
    start = p
    n, p = get_varint(buf, p)
    for _ in range(min(n, len(buf))):
        ln, p = get_varint(buf, p)
        p += ln
    if p > len(buf):
        raise MalformedChange("field name runs past the end")
    raw = bytes(buf[start:p])
    hit = _tables.get(raw)
    if hit is None:
        hit, end = _strings(raw, 0, "field name")
        if end != len(raw):
            raise MalformedChange("field name count runs past the end")
        hit = tuple(hit)
        if len(_tables) > 4096:
            _tables.clear()
        _tables[raw] = hit
    return hit, p


def parse_change(raw, check_hash: bool = True) -> Change:
    """Check version, tables and hash. The ops themselves are checked by the
    engine that merges them. Raises MalformedChange. check_hash=False is for
    a caller that has just computed the hash itself (sync sends changes
    without it)."""
    raw = bytes(raw)
    if len(raw) < 1 + 8 + 5 + HASH_LEN:
        raise MalformedChange("change is too short (%d bytes)" % len(raw))
    if len(raw) > MAX_CHANGE:
        raise MalformedChange("change is larger than %d bytes" % MAX_CHANGE)
    if raw[0] != CHANGE_VERSION:
        raise MalformedChange("change version %d is not supported (this build reads %d)"
                              % (raw[0], CHANGE_VERSION))
    body = memoryview(raw)[:-HASH_LEN]
    digest = raw[-HASH_LEN:]
    if check_hash and _blake(body, digest_size=HASH_LEN).digest() != digest:
        raise MalformedChange("change hash does not match its bytes")
    c = Change()
    c.raw = raw
    c.hash = digest
    c.actor = _u64.unpack_from(raw, 1)[0]
    if c.actor == 0:
        raise MalformedChange("change actor id is zero")
    p = 9
    c.seq, p = get_varint(body, p)
    c.hlc, p = get_varint(body, p)
    c.keys, p = _strings(body, p, "key")
    c.fields, p = _field_table(body, p)
    n, p = get_varint(body, p)
    if p + 8 * n > len(body):
        raise MalformedChange("actor table runs past the end")
    c.actors = [_u64.unpack_from(body, p + 8 * i)[0] for i in range(n)]
    p += 8 * n
    c.nops, p = get_varint(body, p)
    c.ops = body[p:]
    if c.seq == 0:
        raise MalformedChange("change sequence number is zero")
    return c
