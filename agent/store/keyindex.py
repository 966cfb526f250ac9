"""Keys interned to small integers, in three mmap'd files (docs/FORMAT.md):

keys.heap  u16 length + UTF-8 bytes per key, appended
keys.tab   16-byte header (u32 magic, u32 nkeys, u32 heap_used, u32 0), then
           12 bytes per key id: u32 heap offset, u16 length, u8 size class
           (255: no blob), u8 0, u32 slot
keys.hash  open addressing over u64 (crc32(key) << 32 | key id + 1), 0 empty

No Python object per key: lookups probe the mapped table directly.
"""
import os
import struct
import zlib

from ..errors import StoreCorrupt, UsageError
from .mapped import MappedFile

MAGIC = 0x4D59434B  # "MYCK"
TAB_HDR = struct.Struct("<IIII")
ENTRY = struct.Struct("<IHBBI")
ESIZE = ENTRY.size  # 12
NO_CLASS = 255
MAX_KEY = 1024
_u64 = struct.Struct("<Q")
_u16 = struct.Struct("<H")
_crc = zlib.crc32


class KeyIndex:
    __slots__ = ("heap", "tab", "hash", "n", "heap_used", "mask")

    def __init__(self, directory: str, rebuild_hash: bool = False):
        self.heap = MappedFile(os.path.join(directory, "keys.heap"), 1 << 16)
        self.tab = MappedFile(os.path.join(directory, "keys.tab"), 1 << 14)
        magic, n, used, _ = TAB_HDR.unpack_from(self.tab.mm, 0)
        if magic == 0:
            n = used = 0
            TAB_HDR.pack_into(self.tab.mm, 0, MAGIC, 0, 0, 0)
        elif magic != MAGIC:
            raise StoreCorrupt("keys.tab is not a Mycelium key table; "
                               "restore the data directory or run `mycelium init` elsewhere")
        if TAB_HDR.size + n * ESIZE > self.tab.size or used > self.heap.size:
            raise StoreCorrupt("keys.tab header points past its files")
        self.n = n
        self.heap_used = used
        self.hash = MappedFile(os.path.join(directory, "keys.hash"), 1 << 13)
        self.mask = self.hash.size // 8 - 1
        if rebuild_hash:
            self._rehash(self.hash.size // 8)

    # -- lookups

    def find(self, kb: bytes) -> int:
        """Key id of kb, or -1."""
        return self.find_entry(kb)[0]

    def find_entry(self, kb: bytes):
        """(key id, size class, slot) of kb; (-1, NO_CLASS, 0) if absent."""
        h = _crc(kb)
        mask = self.mask
        i = h & mask
        hm = self.hash.mm
        tm = self.tab.mm
        unpack = _u64.unpack_from
        while True:
            e = unpack(hm, i << 3)[0]
            if e == 0:
                return -1, NO_CLASS, 0
            if e >> 32 == h:
                kid = (e & 0xFFFFFFFF) - 1
                off, ln, cls, _, slot = ENTRY.unpack_from(tm, 16 + kid * ESIZE)
                if ln == len(kb) and self.heap.mm[off + 2:off + 2 + ln] == kb:
                    return kid, cls, slot
            i = (i + 1) & mask

    def location(self, kid: int):
        """-> (size class or 255, slot)"""
        _, _, cls, _, slot = ENTRY.unpack_from(self.tab.mm, 16 + kid * ESIZE)
        return cls, slot

    def set_location(self, kid: int, cls: int, slot: int) -> None:
        off = 16 + kid * ESIZE
        hoff, ln, _, _, _ = ENTRY.unpack_from(self.tab.mm, off)
        ENTRY.pack_into(self.tab.mm, off, hoff, ln, cls, 0, slot)

    def key(self, kid: int) -> bytes:
        off, ln, _, _, _ = ENTRY.unpack_from(self.tab.mm, 16 + kid * ESIZE)
        return self.heap.mm[off + 2:off + 2 + ln]

    def entries(self):
        """Iterate (key id, heap offset, length, class, slot) over all keys."""
        tm = self.tab.mm
        for kid, (off, ln, cls, _, slot) in enumerate(
                ENTRY.iter_unpack(tm[16:16 + self.n * ESIZE])):
            yield kid, off, ln, cls, slot

    def scan(self, prefix: bytes):
        """Key ids whose key starts with prefix (unordered)."""
        hm = self.heap.mm
        lp = len(prefix)
        out = []
        for kid, (off, ln, cls, _, _) in enumerate(
                ENTRY.iter_unpack(self.tab.mm[16:16 + self.n * ESIZE])):
            if ln >= lp and hm[off + 2:off + 2 + lp] == prefix:
                out.append(kid)
        return out

    # -- interning

    def intern(self, kb: bytes) -> int:
        kid = self.find(kb)
        if kid >= 0:
            return kid
        ln = len(kb)
        if ln == 0 or ln > MAX_KEY:
            raise UsageError("a key must be 1 to %d bytes of UTF-8" % MAX_KEY)
        off = self.heap_used
        self.heap.ensure(off + 2 + ln)
        hm = self.heap.mm
        _u16.pack_into(hm, off, ln)
        hm[off + 2:off + 2 + ln] = kb
        kid = self.n
        self.tab.ensure(16 + (kid + 1) * ESIZE)
        ENTRY.pack_into(self.tab.mm, 16 + kid * ESIZE, off, ln, NO_CLASS, 0, 0)
        self.n = kid + 1
        self.heap_used = off + 2 + ln
        TAB_HDR.pack_into(self.tab.mm, 0, MAGIC, self.n, self.heap_used, 0)
        if (self.n * 10) > (self.mask + 1) * 7:
            self._rehash((self.mask + 1) * 2)
        else:
            self._place(_crc(kb), kid)
        return kid

    def _place(self, h: int, kid: int) -> None:
        mask = self.mask
        i = h & mask
        hm = self.hash.mm
        unpack = _u64.unpack_from
        while unpack(hm, i << 3)[0]:
            i = (i + 1) & mask
        _u64.pack_into(hm, i << 3, (h << 32) | (kid + 1))

    def _rehash(self, buckets: int) -> None:
        """Rebuild keys.hash from keys.tab (growth, or after a crash)."""
        while self.n * 10 > buckets * 7:
            buckets *= 2
        hf = self.hash
        hf.ensure(buckets * 8)
        hf.mm[:] = bytes(hf.size)
        self.mask = hf.size // 8 - 1
        hm = self.heap.mm
        for kid, off, ln, _, _ in self.entries():
            if off + 2 + ln > self.heap_used:
                raise StoreCorrupt("key %d points past the key heap" % kid)
            self._place(_crc(hm[off + 2:off + 2 + ln]), kid)

    def flush(self):
        for f in (self.heap, self.tab, self.hash):
            f.flush()

    def close(self):
        for f in (self.heap, self.tab, self.hash):
            f.close()
