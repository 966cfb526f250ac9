"""The record store: interned keys -> one checksummed blob per record, held
in pooled mmap arenas (one pool per size class).

A clean open reads only small headers, the key table header and the free
bitmaps: no pass over the records. After a crash (the clean flag is unset)
the free bitmaps and the hash table are rebuilt from the key table, every
blob's checksum is checked, and damaged records are listed in `damaged` for
the node to rebuild from the op log.
"""
import fcntl
import json
import os
import struct
import zlib

from pyroaring import BitMap

from ..errors import StoreCorrupt, StoreLocked, RecordTooLarge, UsageError
from .arena import Arena, SIZE_CLASSES, MAX_BLOB, VISIBLE, class_for, slot_crc
from .arena import HEADER as _SLOT
from .keyindex import KeyIndex, NO_CLASS, ENTRY as _ENTRY

_entry_unpack = _ENTRY.unpack_from
_slot_unpack = _SLOT.unpack_from
_crc = zlib.crc32
_u32 = struct.Struct("<I")

META_VERSION = 1
_meta_hdr = struct.Struct("<BBHI")
_u64 = struct.Struct("<Q")
_u16 = struct.Struct("<H")


class BlobCorrupt(StoreCorrupt):
    """A blob failed its checksum; the node rebuilds it from the op log."""

    def __init__(self, key, kid):
        super().__init__("record %r failed its checksum" % (key,))
        self.key = key
        self.kid = kid


class Watch:
    __slots__ = ("prefix", "callback", "_store")

    def __init__(self, store, prefix, callback):
        self.prefix = prefix
        self.callback = callback
        self._store = store

    def cancel(self):
        if self in self._store._watches:
            self._store._watches.remove(self)


class Store:
    def __init__(self, directory: str):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self._lockfd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lockfd)
            self._lockfd = -1
            raise StoreLocked("another mycelium process is using %s; stop it "
                              "(or use its API) before opening the store" % directory) from None
        self._closed = False
        self._watches = []
        self.damaged = set()
        self.meta, clean = self._read_meta()
        self.was_clean = clean
        self.keys = KeyIndex(directory, rebuild_hash=not clean)
        self.arenas = [None] * len(SIZE_CLASSES)
        self._load_names()
        self.visible = BitMap()
        if clean and self._load_bitmaps():
            pass
        else:
            self._rebuild_bitmaps()
        self.meta["clean"] = False
        self.write_meta()  # anything from now on may be torn until close()

    # -- meta (small JSON, atomically replaced)

    def _read_meta(self):
        path = os.path.join(self.dir, "meta")
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {"log": [0, 0]}, True
        if len(raw) < _meta_hdr.size:
            raise StoreCorrupt("store meta file is truncated: %s" % path)
        ver, clean, _, crc = _meta_hdr.unpack_from(raw)
        body = raw[_meta_hdr.size:]
        if ver != META_VERSION:
            raise StoreCorrupt("store version %d is not supported by this build" % ver)
        if zlib.crc32(body) != crc:
            raise StoreCorrupt("store meta file failed its checksum: %s" % path)
        return json.loads(body), bool(clean)

    def write_meta(self, clean: bool = False) -> None:
        body = json.dumps(self.meta, separators=(",", ":")).encode()
        raw = _meta_hdr.pack(META_VERSION, 1 if clean else 0, 0, zlib.crc32(body)) + body
        path = os.path.join(self.dir, "meta")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # -- interned field names and actors (small; kept in Python)

    def _load_names(self):
        self.field_names = []
        self.field_ids = {}
        path = os.path.join(self.dir, "fields")
        data = open(path, "rb").read() if os.path.exists(path) else b""
        p = 0
        while p + 2 <= len(data):
            n = _u16.unpack_from(data, p)[0]
            if p + 2 + n > len(data):
                break  # torn append: the name will be interned again
            name = data[p + 2:p + 2 + n].decode("utf-8")
            self.field_ids[name] = len(self.field_names)
            self.field_names.append(name)
            p += 2 + n
        self._fields_fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.ftruncate(self._fields_fd, p)
        os.lseek(self._fields_fd, p, 0)
        path = os.path.join(self.dir, "actors")
        data = open(path, "rb").read() if os.path.exists(path) else b""
        data = data[:len(data) // 8 * 8]
        self.actor_table = bytearray(data)  # packed u64, index -> id
        self.actor_ids = {_u64.unpack_from(data, i)[0]: i // 8 for i in range(0, len(data), 8)}
        self._actors_fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.ftruncate(self._actors_fd, len(data))
        os.lseek(self._actors_fd, len(data), 0)

    def field_id(self, name: str) -> int:
        fid = self.field_ids.get(name)
        if fid is None:
            raw = name.encode("utf-8")
            if not raw or len(raw) > 255:
                raise UsageError("a field name must be 1 to 255 bytes")
            os.write(self._fields_fd, _u16.pack(len(raw)) + raw)
            fid = self.field_ids[name] = len(self.field_names)
            self.field_names.append(name)
        return fid

    def actor_index(self, actor: int) -> int:
        i = self.actor_ids.get(actor)
        if i is None:
            raw = _u64.pack(actor)
            os.write(self._actors_fd, raw)
            i = self.actor_ids[actor] = len(self.actor_table) // 8
            self.actor_table += raw
        return i

    def actor_id(self, index: int) -> int:
        return _u64.unpack_from(self.actor_table, index * 8)[0]

    # -- arenas and bitmaps

    def _arena(self, cls: int, free=None) -> Arena:
        a = self.arenas[cls]
        if a is None:
            a = self.arenas[cls] = Arena(
                os.path.join(self.dir, "arena.%d" % SIZE_CLASSES[cls]), SIZE_CLASSES[cls], free)
        return a

    def _load_bitmaps(self) -> bool:
        path = os.path.join(self.dir, "bitmaps")
        try:
            data = open(path, "rb").read()
        except FileNotFoundError:
            return self.keys.n == 0
        if len(data) < 4 or zlib.crc32(data[4:]) != struct.unpack_from("<I", data)[0]:
            return False
        p = 4
        maps = {}
        while p < len(data):
            cls, n = struct.unpack_from("<HI", data, p)
            p += 6
            maps[cls] = BitMap.deserialize(data[p:p + n])
            p += n
        self.visible = maps.pop(0xFFFF, BitMap())
        for cls, free in maps.items():
            self._arena(cls, free)
        return True

    def _write_bitmaps(self):
        parts = []
        for cls, a in enumerate(self.arenas):
            if a is not None:
                raw = a.free.serialize()
                parts.append(struct.pack("<HI", cls, len(raw)) + raw)
        raw = self.visible.serialize()
        parts.append(struct.pack("<HI", 0xFFFF, len(raw)) + raw)
        body = b"".join(parts)
        path = os.path.join(self.dir, "bitmaps")
        with open(path + ".tmp", "wb") as f:
            f.write(struct.pack("<I", zlib.crc32(body)) + body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)

    def _rebuild_bitmaps(self):
        """After a crash: which slots are used, which records are visible,
        which blobs are damaged. One pass over the key table."""
        used = {}
        names = os.listdir(self.dir)
        for cls, size in enumerate(SIZE_CLASSES):
            if "arena.%d" % size in names:
                self._arena(cls, BitMap())
        self.visible = BitMap()
        for kid, _, _, cls, slot in self.keys.entries():
            if cls == NO_CLASS:
                continue
            u = used.setdefault(cls, BitMap())
            ok = cls < len(SIZE_CLASSES) and slot not in u
            if ok:
                a = self._arena(cls, BitMap())
                ok = slot < a.capacity
                if ok:
                    crc, skid, ln, blob = a.read(slot)
                    ok = blob is not None and skid == kid and crc == slot_crc(kid, blob)
            if not ok:
                self.keys.set_location(kid, NO_CLASS, 0)
                self.damaged.add(kid)
                continue
            u.add(slot)
            if ln & VISIBLE:
                self.visible.add(kid)
        for cls, a in enumerate(self.arenas):
            if a is not None:
                a.free = BitMap(range(a.capacity)) - used.get(cls, BitMap())

    # -- records

    def load(self, key: str):
        """The blob of key, or None. Raises BlobCorrupt on a bad checksum."""
        kid, cls, slot = self.keys.find_entry(key.encode("utf-8"))
        if kid < 0:
            return None
        return self._slot_blob(kid, cls, slot, key)

    def load_id(self, kid: int, key=None):
        _, _, cls, _, slot = _entry_unpack(self.keys.tab.mm, 16 + kid * 12)
        return self._slot_blob(kid, cls, slot, key)

    def _slot_blob(self, kid, cls, slot, key):
        """The checked blob in a record's slot; None if it has none."""
        if cls == NO_CLASS:
            if kid in self.damaged:
                raise BlobCorrupt(key, kid)
            return None
        arena = self.arenas[cls]
        off = slot * arena.size
        mm = arena.file.mm
        crc, skid, ln = _slot_unpack(mm, off)
        ln &= 0x7FFF
        blob = mm[off + 10:off + 10 + ln] if ln <= arena.size - 10 else None
        if blob is None or skid != kid or crc != _crc(blob, _crc(_u32.pack(kid))):
            raise BlobCorrupt(key if key is not None else self.keys.key(kid).decode(), kid)
        return blob

    def load_many(self, kbs):
        """(key ids, blobs) for a list of encoded keys: -1 and b"" where absent.
        The merge path's lookup, with the index probe and the slot read inline.
        Raises BlobCorrupt like load()."""
        keys = self.keys
        hm, tm, heap = keys.hash.mm, keys.tab.mm, keys.heap.mm
        mask = keys.mask
        u64 = _u64.unpack_from
        slot_blob = self._slot_blob
        kids = []
        blobs = []
        for kb in kbs:
            h = _crc(kb)
            i = h & mask
            kid = -1
            while True:
                e = u64(hm, i << 3)[0]
                if e == 0:
                    break
                if e >> 32 == h:
                    k = (e & 0xFFFFFFFF) - 1
                    off, ln, cls, _, slot = _entry_unpack(tm, 16 + k * 12)
                    if ln == len(kb) and heap[off + 2:off + 2 + ln] == kb:
                        kid = k
                        break
                i = (i + 1) & mask
            kids.append(kid)
            if kid < 0:
                blobs.append(b"")
            else:
                blobs.append(slot_blob(kid, cls, slot, kb.decode("utf-8", "replace")) or b"")
        return kids, blobs

    def save(self, key: str, blob: bytes, visible: bool, kid: int = -1, kb=None) -> None:
        """Store blob as key's record. A blob that keeps its size class is
        rewritten in place; one that moves gets a new slot, then the index
        points to it, then the old slot is freed. A write torn by a crash
        fails its CRC on the next open and is rebuilt from the op log."""
        if len(blob) > MAX_BLOB:
            raise RecordTooLarge("record %r would take %d bytes; the limit is %d. "
                                 "Split it into several records" % (key, len(blob), MAX_BLOB))
        if kid < 0:
            kid = self.keys.intern(kb if kb is not None else key.encode("utf-8"))
        old_cls, old_slot = self.keys.location(kid)
        cls = class_for(len(blob)) if blob else NO_CLASS
        if cls == old_cls and cls != NO_CLASS:
            self.arenas[cls].write(old_slot, kid, blob, visible)
        else:
            if blob:
                a = self.arenas[cls] or self._arena(cls)
                slot = a.alloc()
                a.write(slot, kid, blob, visible)
                self.keys.set_location(kid, cls, slot)
            else:
                self.keys.set_location(kid, NO_CLASS, 0)
            if old_cls != NO_CLASS:
                self.arenas[old_cls].release(old_slot)
        self.damaged.discard(kid)
        if visible:
            self.visible.add(kid)
        else:
            self.visible.discard(kid)
        if self._watches:
            for w in list(self._watches):
                if key.startswith(w.prefix):
                    w.callback(key, blob)

    def scan(self, prefix: str = ""):
        """Sorted list of (key, key id) of visible records under prefix."""
        vis = self.visible
        out = []
        keys = self.keys
        for kid in keys.scan(prefix.encode("utf-8")):
            if kid in vis:
                out.append((keys.key(kid).decode("utf-8"), kid))
        out.sort()
        return out

    def count(self) -> int:
        return len(self.visible)

    def watch(self, prefix: str, callback) -> Watch:
        """Call callback(key, blob) after each save under prefix."""
        w = Watch(self, prefix, callback)
        self._watches.append(w)
        return w

    def data_bytes(self) -> int:
        """Bytes in use: live slots plus the key index (not file slack)."""
        total = self.keys.heap_used + 16 + self.keys.n * 12 + (self.keys.mask + 1) * 8
        for a in self.arenas:
            if a is not None:
                total += (a.capacity - len(a.free)) * a.size
        return total + len(self.actor_table)

    def trim(self) -> None:
        """Unmap every resident page of the store's files from this process:
        RSS falls back to the interpreter's own; the data stays in the page
        cache and in the files."""
        for a in self.arenas:
            if a is not None:
                a.file.trim()
        for f in (self.keys.heap, self.keys.tab, self.keys.hash):
            f.trim()

    def file_bytes(self) -> int:
        return sum(os.path.getsize(os.path.join(self.dir, n)) for n in os.listdir(self.dir))

    # -- lifecycle

    def checkpoint(self) -> None:
        """Flush everything; after this the meta's log position is safe to
        replay from."""
        for a in self.arenas:
            if a is not None:
                a.flush()
        self.keys.flush()
        os.fsync(self._fields_fd)
        os.fsync(self._actors_fd)
        self._write_bitmaps()
        self.write_meta(clean=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.checkpoint()
        self.write_meta(clean=True)
        for a in self.arenas:
            if a is not None:
                a.close()
        self.keys.close()
        os.close(self._fields_fd)
        os.close(self._actors_fd)
        fcntl.flock(self._lockfd, fcntl.LOCK_UN)
        os.close(self._lockfd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
