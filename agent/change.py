"""Changes: the unit the op log stores and sync sends (docs/FORMAT.md).

A change is a batch of ops from one actor with its own tables of keys, field
names and actor ids, so it means the same on every device. Its id is the
blake2b-128 hash of its bytes, which it also carries at its end.

Version 2 carries `prev`, the seq of its actor's previous change (as a skip
count: seq - 1 - prev). Seqs of one actor rise but need not be contiguous:
after a crash a device skips past the seqs it had reserved, so it never
issues one twice, and `prev` tells a receiver that nothing lies between.
Version 1 (read only) has no skip: its prev is seq - 1.

Version 3 also carries `prev_hash`, the hash of its actor's previous change
(16 zero bytes for an actor's first), so each actor's changes form a hash
chain: a signature over one change's hash (agent/sync/signing.py) vouches
for every change below it. Versions 1 and 2 are read, have no chain
(prev_hash None) and cannot be signed.
"""
import struct

from .codec import get_varint, put_varint, varint
from .errors import MalformedChange

__all__ = ["CHANGE_VERSION", "Change", "build_change", "build_change_raw", "parse_change",
           "change_head", "chain_head", "HASH_LEN",
           "NO_HASH"]

CHANGE_VERSION = 3
READ_VERSIONS = (1, 2, 3)
HASH_LEN = 16
NO_HASH = bytes(HASH_LEN)       # prev_hash of an actor's first change
MAX_CHANGE = 16 * 1024 * 1024
_u64 = struct.Struct("<Q")
try:  # the built-in module: hashlib would load OpenSSL (about 4 MB of RSS)
    from _blake2 import blake2b as _blake
except ImportError:  # pragma: no cover
    from hashlib import blake2b as _blake


class Change:
    __slots__ = ("actor", "seq", "prev", "prev_hash", "hlc", "keys", "fields", "actors",
                 "nops", "ops", "raw", "hash")

    def __repr__(self):
        return "Change(actor=%016x seq=%d prev=%d ops=%d)" % (self.actor, self.seq, self.prev,
                                                              self.nops)


def string_table(strings) -> bytes:
    """The encoded key or field-name table of a change."""
    out = bytearray()
    put_varint(out, len(strings))
    for s in strings:
        raw = s.encode("utf-8")
        put_varint(out, len(raw))
        out += raw
    return bytes(out)


def key_table_one(kb: bytes) -> bytes:
    """string_table([key]) for one key already encoded (the local write path)."""
    return b"\x01" + varint(len(kb)) + kb


def actor_table(actors) -> bytes:
    return varint(len(actors)) + b"".join(_u64.pack(a) for a in actors)


def build_change(actor: int, seq: int, hlc: int, keys, fields, actors,
                 nops: int, ops, prev: int = None, prev_hash: bytes = NO_HASH) -> bytes:
    """keys and fields are lists of str; actors a list of 64-bit ids; prev
    the seq of the actor's previous change (default seq - 1) and prev_hash
    its hash."""
    return build_change_raw(_u64.pack(actor), seq, seq - 1 if prev is None else prev, hlc,
                            string_table(keys), string_table(fields), actor_table(actors),
                            nops, ops, prev_hash)


_V = bytes((CHANGE_VERSION,))


def build_change_raw(actor_b: bytes, seq: int, prev: int, hlc: int, keys_t: bytes,
                     fields_t: bytes, actors_t: bytes, nops: int, ops,
                     prev_hash: bytes = NO_HASH) -> bytes:
    """As build_change, with the actor id (u64 bytes) and the tables already
    encoded (the write path caches them)."""
    if not 0 <= prev < seq:
        raise ValueError("prev %d must be below seq %d" % (prev, seq))
    if len(prev_hash) != HASH_LEN:
        raise ValueError("prev_hash must be %d bytes" % HASH_LEN)
    body = b"".join((_V, actor_b, varint(seq), varint(seq - 1 - prev), prev_hash, varint(hlc),
                     keys_t, fields_t, actors_t, varint(nops), ops))
    return body + _blake(body, digest_size=HASH_LEN).digest()


def _prefix(raw, any_version=False):
    """(version, actor, seq, prev, offset after skip): the header every
    version shares, read without the full parse."""
    v = raw[0] if len(raw) else 0
    if not (v in READ_VERSIONS or (any_version and v > CHANGE_VERSION)) or len(raw) < 10:
        raise MalformedChange("not a change (version %d)" % v)
    actor = _u64.unpack_from(raw, 1)[0]
    seq, p = get_varint(raw, 9)
    skip = 0
    if v >= 2:
        skip, p = get_varint(raw, p)
    if skip >= seq or actor == 0:
        raise MalformedChange("change skips below seq 1, or its actor is zero")
    return v, actor, seq, seq - 1 - skip, p


def actor_seq(raw):
    """(actor, seq) of a change's bytes: the least a log index needs."""
    if len(raw) < 10 or raw[0] not in READ_VERSIONS:
        raise MalformedChange("not a change")
    seq = raw[9]
    if seq >= 0x80:
        seq = get_varint(raw, 9)[0]
    return _u64.unpack_from(raw, 1)[0], seq


def change_head(raw, any_version: bool = False):
    """(actor, seq, prev, hlc) of a change's bytes without the full parse.
    any_version: read a version this build does not know as version 3 (later
    versions keep this header, docs/FORMAT.md), so that such a change can be
    quarantined under its own id."""
    v, actor, seq, prev, p = _prefix(raw, any_version)
    if v >= 3:
        p += HASH_LEN
    hlc, _ = get_varint(raw, p)
    return actor, seq, prev, hlc


def chain_head(raw):
    """(actor, seq, prev, prev_hash, offset of prev_hash) of a change's
    bytes without the full parse; prev_hash is None for versions 1 and 2.
    Sync leaves prev_hash out on the wire when the change before travels
    in the same batch: the offset says where it goes back."""
    v, actor, seq, prev, p = _prefix(raw)
    return actor, seq, prev, (raw[p:p + HASH_LEN] if v >= 3 else None), p


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
    if raw[0] not in READ_VERSIONS:
        raise MalformedChange("change version %d is not supported (this build reads %s)"
                              % (raw[0], " and ".join(map(str, READ_VERSIONS))))
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
    skip = 0
    c.prev_hash = None
    if raw[0] >= 2:
        skip, p = get_varint(body, p)
    if raw[0] == 3:
        if p + HASH_LEN > len(body):
            raise MalformedChange("change runs past its end")
        c.prev_hash = bytes(body[p:p + HASH_LEN])
        p += HASH_LEN
    c.prev = c.seq - 1 - skip
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
    if c.seq == 0 or c.prev < 0:
        raise MalformedChange("change sequence number is zero or skips below 1")
    return c
