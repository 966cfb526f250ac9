"""Keys interned to small integers, in three mmap'd files (docs/FORMAT.md,
store version 2):

keys.heap  u16 length + UTF-8 bytes per key, appended in key-id order
keys.tab   16-byte header written once (u32 magic "MYCK", u16 version 2,
           u16 entry size 16, 8 bytes 0), then 16 bytes per key id:
           u32 heap offset, u16 length, u8 size class (255: no blob), u8 0,
           u32 slot, u32 crc32(the 12 bytes before, u32 key id, key bytes)
keys.hash  blocks of 512 bytes: 63 buckets of u64 (crc32(key) << 32 | key id
           + 1, 0 empty; linear probing over all blocks' buckets), then
           u64 (0x4D594348 << 32 | crc32 of the 504 bucket bytes)

No header is rewritten in place: the number of keys and the heap's length
come from the store's meta (a clean close) or, after a crash, from walking
the entries past the last checkpoint while they are whole and contiguous.
Every probed hash block is checked once per process; a bad one is rebuilt
from keys.tab. No Python object per key: lookups probe the mapped files.
"""
import os
import struct
import zlib

from ..errors import StoreCorrupt, UsageError
from .mapped import MappedFile, WRITE, READ, PRIVATE

MAGIC = 0x4D59434B  # "MYCK"
VERSION = 2
TAB_HDR = struct.Struct("<IHHII")
HDR_SIZE = 16
ENTRY = struct.Struct("<IHBBII")
HEAD12 = struct.Struct("<IHBBI")
_HEAD_KID = struct.Struct("<IHBBII")  # the 12 bytes, then the key id: what the CRC covers first
ESIZE = ENTRY.size  # 16
NO_CLASS = 255
BIG = 254          # the record is in store/big/ (agent/store/big.py), slot 0
NEEDS_REPAIR = 253 # the record's blob was found damaged: rebuild it from the op log. Kept
                   # on disk until a save replaces it, so a kill before the repair loses
                   # nothing (as "no blob", the next open would take the record for empty)
MAX_KEY = 1024
BLOCK = 512
PER_BLOCK = 63
HASH_MAGIC = 0x4D594348  # "MYCH"
_u64 = struct.Struct("<Q")
_u32 = struct.Struct("<I")
_u16 = struct.Struct("<H")
_crc = zlib.crc32
_EMPTY_CHECK = _u64.pack(HASH_MAGIC << 32 | _crc(bytes(BLOCK - 8)))
_EMPTY_BLOCK = bytes(BLOCK - 8) + _EMPTY_CHECK


class HashDamaged(StoreCorrupt):
    """A keys.hash block failed its check; the index rebuilds it."""


def entry_crc(kid, off, ln, cls, slot, kb) -> int:
    """crc32 of the entry's 12 bytes, u32 key id, the key's bytes."""
    return _crc(kb, _crc(_HEAD_KID.pack(off, ln, cls, 0, slot, kid)))


def blocks_for(n: int) -> int:
    """Hash blocks for n keys at most 70% full (a power of two, at least 16)."""
    b = 16
    while n * 10 > b * PER_BLOCK * 7:
        b *= 2
    return b


class KeyIndex:
    __slots__ = ("dir", "mode", "heap", "tab", "hash", "n", "heap_used", "nb", "_ok")

    def __init__(self, directory: str, mode: str = WRITE, n: int = 0, heap_used: int = 0,
                 hash_blocks: int = 0):
        self.dir = directory
        self.mode = mode
        self.heap = MappedFile(os.path.join(directory, "keys.heap"), 1 << 16, mode)
        self.tab = MappedFile(os.path.join(directory, "keys.tab"), 1 << 14, mode)
        self.hash = MappedFile(os.path.join(directory, "keys.hash"), 16 * BLOCK, mode)
        self.n = n
        self.heap_used = heap_used
        if self.tab.size >= HDR_SIZE:
            magic, ver, esize, _, _ = TAB_HDR.unpack_from(self.tab.mm, 0)
        else:
            magic = ver = esize = 0
        self._fit_hash()
        if magic == 0 and n == 0 and mode != READ:
            TAB_HDR.pack_into(self.tab.mm, 0, MAGIC, VERSION, ESIZE, 0, 0)
            self.rehash()
        elif magic != MAGIC or ver != VERSION or esize != ESIZE:
            raise StoreCorrupt("store/keys.tab has a bad header (magic %08x, version %d)"
                               % (magic, ver))
        elif hash_blocks and self.hash.size // BLOCK != hash_blocks:
            raise HashDamaged("store/keys.hash has %d blocks; the meta says %d"
                              % (self.hash.size // BLOCK, hash_blocks))

    def _fit_hash(self):
        self.nb = (self.hash.size // BLOCK) * PER_BLOCK
        self._ok = bytearray(self.hash.size // BLOCK)

    def hash_blocks(self) -> int:
        return self.hash.size // BLOCK

    def check_bounds(self) -> None:
        """The counts from the meta fit the files (a truncated file fails)."""
        if HDR_SIZE + self.n * ESIZE > self.tab.size:
            raise StoreCorrupt("store/keys.tab is shorter than its %d keys need" % self.n)
        if self.heap_used > self.heap.size:
            raise StoreCorrupt("store/keys.heap is shorter than its %d keys need" % self.n)

    # -- the hash table

    def _block_ok(self, b: int) -> None:
        if not self._ok[b]:
            off = b * BLOCK
            hm = self.hash.mm
            if hm[off + BLOCK - 8:off + BLOCK] != _u64.pack(
                    HASH_MAGIC << 32 | _crc(hm[off:off + BLOCK - 8])):
                raise HashDamaged("store/keys.hash block %d failed its check" % b)
            self._ok[b] = 1

    def find_entry(self, kb: bytes):
        """(key id, size class, slot) of kb; (-1, NO_CLASS, 0) if absent.
        Raises HashDamaged or StoreCorrupt on damage it meets."""
        h = _crc(kb)
        nb = self.nb
        i = h % nb
        hm, tm, heap = self.hash.mm, self.tab.mm, self.heap.mm
        unpack = _u64.unpack_from
        ok = self._ok
        while True:
            b = i // PER_BLOCK
            if not ok[b]:
                self._block_ok(b)
            e = unpack(hm, (i + b) << 3)[0]  # b * BLOCK + (i - b * PER_BLOCK) * 8
            if e == 0:
                return -1, NO_CLASS, 0
            if e >> 32 == h:
                kid = (e & 0xFFFFFFFF) - 1
                if kid >= self.n:
                    raise HashDamaged("store/keys.hash names key %d of %d" % (kid, self.n))
                off, ln, cls, _, slot, crc = ENTRY.unpack_from(tm, HDR_SIZE + kid * ESIZE)
                if ln == len(kb) and heap[off + 2:off + 2 + ln] == kb:
                    if cls == NO_CLASS:
                        self._check_entry(kid)
                    return kid, cls, slot
                self._check_entry(kid)  # a real collision, or damage
                if _crc(self.key(kid)) != h:
                    raise HashDamaged("store/keys.hash bucket of key %d is wrong" % kid)
            i += 1
            if i == nb:
                i = 0

    def find(self, kb: bytes) -> int:
        return self.find_entry(kb)[0]

    def _place(self, h: int, kid: int, seal: bool = True) -> None:
        nb = self.nb
        i = h % nb
        hm = self.hash.mm
        unpack = _u64.unpack_from
        while True:
            b, p = divmod(i, PER_BLOCK)
            if not unpack(hm, b * BLOCK + p * 8)[0]:
                break
            i += 1
            if i == nb:
                i = 0
        off = b * BLOCK
        if seal and not self._ok[b]:
            self._block_ok(b)  # never seal damage in: (a lookup has checked it already)
        _u64.pack_into(hm, off + p * 8, (h << 32) | (kid + 1))
        if seal:
            _u64.pack_into(hm, off + BLOCK - 8, HASH_MAGIC << 32 | _crc(hm[off:off + BLOCK - 8]))

    def rehash(self, blocks: int = 0, check: bool = True) -> None:
        """Rebuild keys.hash from keys.tab: on growth (check=False: our own
        entries, just written), after a crash, or when a block failed its
        check. Raises StoreCorrupt if a checked keys.tab entry is damaged."""
        hf = self.hash
        hf.ensure(max(blocks, blocks_for(self.n)) * BLOCK)
        blocks = hf.size // BLOCK  # the whole file: it never shrinks
        hm = hf.mm
        hm[:blocks * BLOCK] = bytes(blocks * BLOCK)
        self.nb = blocks * PER_BLOCK
        key = self._checked_key if check else self.key
        for kid in range(self.n):
            self._place(_crc(key(kid)), kid, seal=False)
        for b in range(blocks):
            off = b * BLOCK
            _u64.pack_into(hm, off + BLOCK - 8, HASH_MAGIC << 32 | _crc(hm[off:off + BLOCK - 8]))
        self._ok = bytearray(b"\x01") * blocks

    def rebuild_private(self) -> None:
        """A read-only process met a bad hash block: rebuild the hash in its
        own memory (the file is left for a writer to repair)."""
        self.hash.close()
        self.hash = MappedFile(os.path.join(self.dir, "keys.hash"), 16 * BLOCK, PRIVATE)
        self.rehash()

    # -- entries

    def _check_entry(self, kid: int) -> None:
        off, ln, cls, _, slot, crc = ENTRY.unpack_from(self.tab.mm, HDR_SIZE + kid * ESIZE)
        if off + 2 + ln > self.heap_used or crc != entry_crc(
                kid, off, ln, cls, slot, self.heap.mm[off + 2:off + 2 + ln]):
            raise StoreCorrupt("store/keys.tab entry %d (or its key in store/keys.heap) "
                               "failed its checksum" % kid)

    def _checked_key(self, kid: int) -> bytes:
        self._check_entry(kid)
        return self.key(kid)

    def location(self, kid: int):
        """-> (size class or 255, slot)"""
        _, _, cls, _, slot, _ = ENTRY.unpack_from(self.tab.mm, HDR_SIZE + kid * ESIZE)
        return cls, slot

    def set_location(self, kid: int, cls: int, slot: int, kb: bytes = None) -> None:
        at = HDR_SIZE + kid * ESIZE
        off, ln, _, _, _, _ = ENTRY.unpack_from(self.tab.mm, at)
        if kb is None or len(kb) != ln:
            kb = self.heap.mm[off + 2:off + 2 + ln]
        ENTRY.pack_into(self.tab.mm, at, off, ln, cls, 0, slot,
                        entry_crc(kid, off, ln, cls, slot, kb))

    def key(self, kid: int) -> bytes:
        off, ln, _, _, _, _ = ENTRY.unpack_from(self.tab.mm, HDR_SIZE + kid * ESIZE)
        return self.heap.mm[off + 2:off + 2 + ln]

    def entries(self):
        """Iterate (key id, class, slot) over all keys, each entry checked
        (StoreCorrupt names the first bad one)."""
        tm = self.tab.mm
        heap = self.heap.mm
        used = self.heap_used
        for kid, (off, ln, cls, _, slot, crc) in enumerate(
                ENTRY.iter_unpack(tm[HDR_SIZE:HDR_SIZE + self.n * ESIZE])):
            if off + 2 + ln > used or crc != entry_crc(kid, off, ln, cls, slot,
                                                       heap[off + 2:off + 2 + ln]):
                raise StoreCorrupt("store/keys.tab entry %d (or its key in store/keys.heap) "
                               "failed its checksum" % kid)
            yield kid, cls, slot

    def scan(self, prefix: bytes, lo: int = 0, hi: int = None):
        """Key ids (from lo, below hi) whose key starts with prefix
        (unordered), each checked."""
        hm = self.heap.mm
        lp = len(prefix)
        used = self.heap_used
        out = []
        hi = self.n if hi is None else min(hi, self.n)
        for kid, (off, ln, cls, _, slot, crc) in enumerate(
                ENTRY.iter_unpack(self.tab.mm[HDR_SIZE + lo * ESIZE:HDR_SIZE + hi * ESIZE]), lo):
            if ln >= lp and hm[off + 2:off + 2 + lp] == prefix:
                if off + 2 + ln > used or crc != entry_crc(kid, off, ln, cls, slot,
                                                           hm[off + 2:off + 2 + ln]):
                    raise StoreCorrupt("store/keys.tab entry %d (or its key in store/keys.heap) "
                               "failed its checksum" % kid)
                out.append(kid)
        return out

    # -- interning

    def has_room(self, nkeys: int, nbytes: int) -> bool:
        """Could nkeys keys of nbytes in all be interned without growing a file?"""
        n = self.n + nkeys
        return (self.heap_used + nbytes + 2 * nkeys <= self.heap.size
                and HDR_SIZE + n * ESIZE <= self.tab.size and n * 10 <= self.nb * 7)

    def ensure_room(self, nkeys: int, nbytes: int) -> None:
        """Grow the files so that interning nkeys more keys of nbytes in all
        needs no more disk space (DiskFull otherwise, nothing changed)."""
        self.heap.ensure(self.heap_used + nbytes + 2 * nkeys)
        self.tab.ensure(HDR_SIZE + (self.n + nkeys) * ESIZE)
        if (self.n + nkeys) * 10 > self.nb * 7:
            self.rehash(blocks_for(self.n + nkeys), check=False)

    def intern(self, kb: bytes) -> int:
        kid = self.find(kb)
        if kid >= 0:
            return kid
        return self.add(kb)

    def add(self, kb: bytes, cls: int = NO_CLASS, slot: int = 0) -> int:
        """Intern kb, which the caller knows is absent, with its record's
        location (class, slot) if it has one already."""
        ln = len(kb)
        if ln == 0 or ln > MAX_KEY:
            raise UsageError("a key must be 1 to %d bytes of UTF-8" % MAX_KEY)
        if not self.has_room(1, ln):
            self.ensure_room(1, ln)  # (make_room has done this on the write path)
        off = self.heap_used
        hm = self.heap.mm
        _u16.pack_into(hm, off, ln)
        hm[off + 2:off + 2 + ln] = kb
        kid = self.n
        ENTRY.pack_into(self.tab.mm, HDR_SIZE + kid * ESIZE, off, ln, cls, 0, slot,
                        entry_crc(kid, off, ln, cls, slot, kb))
        self.n = kid + 1
        self.heap_used = off + 2 + ln
        self._place(_crc(kb), kid)
        return kid

    # -- after a crash

    def recover(self, ckpt_n: int, ckpt_heap: int):
        """After a crash: every entry below the checkpoint is checked (a torn
        location is reset to 'no blob' and its key id returned for repair
        from the op log), and the entries made after the checkpoint are kept
        while they are whole and contiguous in the heap. Then the hash is
        rebuilt. Returns the set of key ids to repair. Raises StoreCorrupt
        when the heap and the table disagree below the checkpoint."""
        tm, heap = self.tab.mm, self.heap.mm
        damaged = set()
        expect = 0
        kid = 0
        max_kids = (self.tab.size - HDR_SIZE) // ESIZE
        old_hash_ok = self.nb > 0
        while kid < max_kids:
            off, ln, cls, _, slot, crc = ENTRY.unpack_from(tm, HDR_SIZE + kid * ESIZE)
            good = (off == expect and 0 < ln <= MAX_KEY and off + 2 + ln <= self.heap.size
                    and _u16.unpack_from(heap, off)[0] == ln
                    and crc == entry_crc(kid, off, ln, cls, slot, heap[off + 2:off + 2 + ln]))
            if not good:
                if kid >= ckpt_n:
                    break
                # below the checkpoint the heap is whole: it names the key
                if expect + 2 > ckpt_heap:
                    raise StoreCorrupt("store/keys.heap is shorter than keys.tab says")
                ln = _u16.unpack_from(heap, expect)[0]
                kb = heap[expect + 2:expect + 2 + ln]
                if not (0 < ln <= MAX_KEY and expect + 2 + ln <= ckpt_heap
                        and old_hash_ok and self._old_hash_has(kb, kid)):
                    raise StoreCorrupt("store/keys.tab entry %d and store/keys.heap disagree"
                                       % kid)
                off = expect
                ENTRY.pack_into(tm, HDR_SIZE + kid * ESIZE, off, ln, NEEDS_REPAIR, 0, 0,
                                entry_crc(kid, off, ln, NEEDS_REPAIR, 0, kb))
                damaged.add(kid)
            expect = off + 2 + ln
            kid += 1
        if kid < ckpt_n:
            raise StoreCorrupt("store/keys.tab holds %d keys; the checkpoint says %d"
                               % (kid, ckpt_n))
        self.n = kid
        self.heap_used = expect
        self.rehash()
        return damaged

    def _old_hash_has(self, kb: bytes, kid: int) -> bool:
        """Does the (not yet rebuilt) hash file hold kb -> kid in a sound block?"""
        h = _crc(kb)
        want = (h << 32) | (kid + 1)
        if not self.nb:
            return False
        i = h % self.nb
        hm = self.hash.mm
        for _ in range(self.nb):
            b, p = divmod(i, PER_BLOCK)
            try:
                self._block_ok(b)
            except HashDamaged:
                return False
            e = _u64.unpack_from(hm, b * BLOCK + p * 8)[0]
            if e == want:
                return True
            if e == 0:
                return False
            i = (i + 1) % self.nb
        return False

    def flush(self):
        for f in (self.heap, self.tab, self.hash):
            f.flush()

    def trim(self):
        for f in (self.heap, self.tab, self.hash):
            f.trim()

    def close(self):
        for f in (self.heap, self.tab, self.hash):
            f.close()
