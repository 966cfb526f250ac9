"""The record digest tree: what `mycelium check PEER` compares with a peer
(docs/SYNC.md, "Convergence check").

    d = digests_of(store)       built on first use, then kept in step
    d.refresh()                 fold in the records saved since (Store.touched)
    d.children(level, i)        the 16 digests under node (level, i), level 0..2
    d.entries(bucket)           [(key bytes, digest)] of one leaf bucket

A record's digest is blake2b-128 of its key and its state in a canonical
form: field names instead of this store's field ids, 64-bit actor ids
instead of actor indexes, encoded as the reference engine encodes blobs. Two
devices holding the same state of a record give the same digest whatever
order they interned names in; any difference in any CRDT metadata (a stamp,
a counter entry, a set tombstone) gives another. An empty record has digest
0, as an absent one.

Keys fall into 4096 leaf buckets by a hash of the key alone. A leaf is the
XOR of its records' digests; every inner node (16 children, three levels up
to the root) is the XOR of its leaves. So a save changes one digest and
four XORs, never a walk: the tree is maintained incrementally. XOR is no
defence against a peer that lies, which could lie about its records anyway;
it detects every accidental difference (a fork, a lost change, bit rot) but
with probability 2^-128.

The tree lives in memory (about 20 bytes per key plus 90 KB). It is built
from the store on the first check (tens of microseconds a record), then
each save adds its key id to store.touched and the next refresh()
recomputes only those. A clean close saves it (store/digests) and the next
writer takes it back, so it is built whole only once, and again after a
crash (Store._take_digests).
"""
import struct
import time
import zlib
from array import array
from hashlib import blake2b

from ..codec import put_varint
from ..core import reference as R
from ..errors import StoreError
from .join import remap

__all__ = ["Digests", "digests_of", "FANOUT", "DEPTH", "BUCKETS", "record_digest", "bucket_of"]

FANOUT = 16
DEPTH = 3                       # levels below the root
BUCKETS = FANOUT ** DEPTH       # 4096 leaves
DIGEST = 16
_MAGIC = b"MYCDGST1"
_HEAD = struct.Struct("<8sQ")


def bucket_of(kb: bytes) -> int:
    return int.from_bytes(blake2b(kb, digest_size=2, person=b"myc-bucket").digest(),
                          "big") >> 4


class _Intern(dict):
    """A map that numbers what it is asked for, in order of asking."""

    def __missing__(self, k):
        v = self[k] = len(self)
        return v


class _ActorIds:
    def __init__(self, store):
        self.store = store

    def __getitem__(self, i):
        return self.store.actor_id(i)


def canonical(store, blob):
    """(field names in order, blob in canonical ids) of a record blob."""
    r = R.decode_blob(blob)
    names = store.field_names
    order = sorted(r.fields, key=lambda fid: names[fid])
    fmap = {fid: i for i, fid in enumerate(order)}
    return [names[fid] for fid in order], R.encode_blob(remap(r, fmap, _ActorIds(store)))


def record_digest(store, kb: bytes, blob) -> int:
    if not blob:
        return 0
    names, canon = canonical(store, blob)
    h = blake2b(digest_size=DIGEST, person=b"myc-record")
    head = bytearray()
    put_varint(head, len(kb))
    head += kb
    put_varint(head, len(names))
    for n in names:
        nb = n.encode("utf-8")
        put_varint(head, len(nb))
        head += nb
    h.update(head)
    h.update(canon)
    return int.from_bytes(h.digest(), "little")


class Digests:
    def __init__(self, store):
        self.store = store
        self.n = 0                       # key ids covered
        self.digest = []                 # key id -> digest (int, 0: empty or unreadable)
        self.bucket = array("H")         # key id -> its leaf bucket
        self.members = [array("I") for _ in range(BUCKETS)]
        self.levels = [[0] * (FANOUT ** lv) for lv in range(DEPTH + 1)]  # [root], 16, 256, 4096
        self.unreadable = set()          # key ids whose blob failed its checksum
        saved, store.saved_digests = store.saved_digests, None
        self.touched, store.touched = store.touched or set(), set()
        if saved is None or not self._load(saved):
            self.touched = set()             # a build from the store covers them all

    @property
    def complete(self) -> bool:
        return self.n >= self.store.keys.n and not self.touched

    def step(self, seconds: float) -> bool:
        """Build for about `seconds` (the rest of the store, then the keys
        saved meanwhile); True once complete. In slices, a large store's
        first build never holds serve's loop for long."""
        end = time.monotonic() + seconds
        while self.n < self.store.keys.n:
            self._update(range(self.n, min(self.n + 256, self.store.keys.n)))
            if time.monotonic() > end:
                return False
        if self.touched:
            touched, self.touched = self.touched, set()
            self._update(sorted(touched))
        return self.complete

    def dump(self) -> bytes:
        """The tree as a file (store/digests, written at a clean close):
        magic, key ids covered, each one's bucket (u16) and digest, crc32.
        None while a build is under way (only the saves since are folded in
        here, never the rest of a build)."""
        self.touched |= self.store.touched
        self.store.touched = set()
        if self.n < self.store.keys.n:
            return None
        self.step(float("inf"))
        body = bytearray(_HEAD.pack(_MAGIC, self.n))
        body += self.bucket.tobytes()
        for d in self.digest:
            body += d.to_bytes(DIGEST, "little")
        return bytes(body + struct.pack("<I", zlib.crc32(body)))

    def _load(self, data) -> bool:
        """Take a dump(); False (nothing taken) if it does not check out."""
        if len(data) < _HEAD.size + 4 or struct.unpack_from("<I", data, len(data) - 4)[0] \
                != zlib.crc32(memoryview(data)[:-4]):
            return False
        magic, n = _HEAD.unpack_from(data, 0)
        if magic != _MAGIC or n > self.store.keys.n or \
                len(data) != _HEAD.size + n * (2 + DIGEST) + 4:
            return False
        bucket = array("H")
        bucket.frombytes(data[_HEAD.size:_HEAD.size + 2 * n])
        if bucket and max(bucket) >= BUCKETS:
            return False
        p = _HEAD.size + 2 * n
        frm = int.from_bytes
        self.digest = [frm(data[p + DIGEST * i:p + DIGEST * (i + 1)], "little")
                       for i in range(n)]
        self.bucket = bucket
        levels, members = self.levels, self.members
        shifts = [4 * (DEPTH - lv) for lv in range(DEPTH + 1)]
        for kid in range(n):
            b = bucket[kid]
            members[b].append(kid)
            d = self.digest[kid]
            if d:
                for lv in range(DEPTH + 1):
                    levels[lv][b >> shifts[lv]] ^= d
        self.n = n
        return True

    def _update(self, kids):
        store, keys = self.store, self.store.keys
        levels = self.levels
        shifts = [4 * (DEPTH - lv) for lv in range(DEPTH + 1)]
        for kid in kids:
            if kid >= self.n:
                self._cover(kid + 1)
            kb = keys.key(kid)
            try:
                d = record_digest(store, kb, store.load_id(kid, None))
                self.unreadable.discard(kid)
            except StoreError:
                d = 0
                self.unreadable.add(kid)
            delta = self.digest[kid] ^ d
            if not delta:
                continue
            self.digest[kid] = d
            b = self.bucket[kid]
            for lv in range(DEPTH + 1):
                levels[lv][b >> shifts[lv]] ^= delta

    def _cover(self, n):
        keys = self.store.keys
        for kid in range(self.n, n):
            b = bucket_of(keys.key(kid))
            self.digest.append(0)
            self.bucket.append(b)
            self.members[b].append(kid)
        self.n = n

    def refresh(self) -> None:
        """Fold in the saves since (whole: also what a build left)."""
        store = self.store
        self.touched |= store.touched
        store.touched = set()
        self.step(float("inf"))

    @property
    def root(self) -> bytes:
        return self.levels[0][0].to_bytes(DIGEST, "little")

    def children(self, level: int, i: int) -> bytes:
        """The 16 digests (16 bytes each) under node i of level 0..DEPTH-1."""
        below = self.levels[level + 1]
        return b"".join(d.to_bytes(DIGEST, "little") for d in below[i * FANOUT:(i + 1) * FANOUT])

    def entries(self, bucket: int) -> list:
        """[(key bytes, digest bytes)] of a leaf bucket's non-empty records."""
        keys, dig = self.store.keys, self.digest
        return [(keys.key(kid), dig[kid].to_bytes(DIGEST, "little"))
                for kid in self.members[bucket] if dig[kid]]


def digests_of(store, seconds: float = None) -> Digests:
    """The store's digest tree, brought up to date (made on first use).
    seconds: build for at most about that long; see .complete."""
    d = getattr(store, "digests", None)
    if d is None:
        d = store.digests = Digests(store)
    if seconds is None:
        d.refresh()
    else:
        d.touched |= store.touched
        store.touched = set()
        d.step(seconds)
    return d
