"""The record store: interned keys -> one checksummed blob per record, held
in pooled mmap arenas (one pool per size class).

Every file carries checksums (docs/FORMAT.md, store version 2), and the store
is a cache of the op log: whatever fails a check is rebuilt, from the other
files where they suffice (the hash from the key table, the bitmaps from the
slots), else from the log by the node (a record, or the whole store).

Opening as a writer (mode WRITE, exclusive lock):
  clean  (the `clean` marker exists: the last close finished) - read small
         headers, the meta and the bitmaps; no pass over the records. The
         marker is removed (and that made durable) before anything changes.
  dirty  (a crash) - the key table is checked entry by entry and extended
         past the last checkpoint while its entries are whole, the hash and
         the bitmaps are rebuilt, every blob's CRC is checked; key ids whose
         record failed are left in `damaged` for the node to rebuild.
Opening as a reader (readonly=True) writes nothing:
  no writer, clean   maps the files read-only, under a shared lock
  no writer, dirty   runs the crash recovery above in private memory
  writer running     maps the files read-only and reads under its seqlock
                     (the `live` file), retrying when a write overlapped
"""
import heapq
import json
import os
import struct
import time
import zlib

from .. import fs
from ..errors import StoreCorrupt, StoreLocked, RecordTooLarge
from . import bitmaps
from .arena import Arena, SIZE_CLASSES, MAX_BLOB, class_for, HEADER as _SLOT
from .big import BigFiles, MAX_RECORD
from .keyindex import KeyIndex, HashDamaged, NO_CLASS, BIG
from .lock import Lock, Live, boot_id, writer_holds
from .mapped import WRITE, READ, PRIVATE
from .names import Table

__all__ = ["Store", "BlobCorrupt", "Watch", "read_meta", "boot_id", "writer_holds"]

_crc = zlib.crc32
META_VERSION = 2
_meta_hdr = struct.Struct("<BBHI")
CLEAN = "clean"
DIGESTS = "digests"          # the digest tree, saved at a clean close (history/digests.py)
_NCLASSES = len(SIZE_CLASSES)


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


def read_meta(directory: str):
    """The store's meta dict, or None if there is none. StoreCorrupt if damaged."""
    path = os.path.join(directory, "meta")
    try:
        raw = fs.read_file(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise fs.error(e, "read", path) from None
    if len(raw) < _meta_hdr.size:
        raise StoreCorrupt("store/meta is truncated")
    ver, _, _, crc = _meta_hdr.unpack_from(raw)
    body = raw[_meta_hdr.size:]
    if zlib.crc32(body) != crc:
        raise StoreCorrupt("store/meta failed its checksum")
    if ver != META_VERSION:
        raise StoreCorrupt("store/meta is version %d; this build keeps version %d"
                           % (ver, META_VERSION))
    try:
        return json.loads(body)
    except ValueError:
        raise StoreCorrupt("store/meta is not JSON") from None


class Store:
    def __init__(self, directory: str, readonly: bool = False, memory: bool = False,
                 durable: bool = True):
        """memory=True: a store held in private memory only, rebuilt by the
        node from the op log for a read-only process (nothing on disk).
        durable: whether the writer fsyncs each change before saving it (it
        is recorded: after a power cut, a relaxed writer's store may hold
        changes its log lost)."""
        self.dir = directory
        self.durable = durable
        self.readonly = readonly or memory
        self._closed = False
        self._watches = []
        self.touched = None      # key ids saved since the digest tree last looked
        self.digests = None      # history/digests.py, built by the first check
        self.saved_digests = None  # ... or as the last clean close saved it
        self.lock = None
        self.damaged = set()
        self.arenas = [None] * len(SIZE_CLASSES)
        self.live_writer = False
        self.keys = None
        self.live = None
        self.fields = self.actors = None
        self.big = None
        try:
            self._open(memory)
        except BaseException:
            self._release()
            raise

    def _open(self, memory):
        d = self.dir
        if memory:
            self._memory()
            return
        if not self.readonly:
            try:
                fs.mkdir(d)
            except OSError as e:
                raise fs.error(e, "create", d) from None
        self.lock = Lock(d, self.readonly, self.durable)
        self.live_writer = self.lock.live_writer
        meta = read_meta(d)
        if meta is None and self.readonly and not self.live_writer:
            self._memory()  # nothing stored here yet
            return
        if meta is None:
            names = set(os.listdir(d)) - {"lock", "live", CLEAN} if os.path.isdir(d) else set()
            if names:
                raise StoreCorrupt("store/meta is missing beside %d other store files" % len(names))
            self._write_meta({})  # a new store: its first checkpoint is the empty one
        clean = meta is not None and os.path.exists(os.path.join(d, CLEAN))
        self.meta = meta or {}
        self.was_clean = clean or meta is None
        self._check_sizes(self.meta.get("sizes", {}))
        if self.readonly:
            self.mode = READ if (clean or self.live_writer) else PRIVATE
        else:
            self.mode = WRITE
            if clean:
                try:
                    fs.unlink(os.path.join(d, CLEAN))
                    fs.fsync_dir(d)
                except OSError as e:
                    raise fs.error(e, "open", d) from None
        self._open_files(self.meta, dirty=not self.was_clean and not self.live_writer,
                         empty=meta is None)

    def _memory(self):
        """An empty store in private memory (no file is read or written)."""
        self.dir = os.path.join(self.dir, ".in-memory")
        self.mode = PRIVATE
        self.was_clean = True
        self.meta = {}
        self._open_files({}, dirty=False, empty=True)

    def _check_sizes(self, sizes):
        """Store files only grow: one shorter than at the last checkpoint was
        cut (damage), which opening it for writing would hide under zeros."""
        for name, size in sizes.items():
            try:
                have = os.path.getsize(os.path.join(self.dir, name))
            except FileNotFoundError:
                have = 0
            if have < size:
                raise StoreCorrupt("store/%s is shorter than at the last checkpoint (%d of %d "
                                   "bytes)" % (name, have, size))

    # -- opening the files

    def _open_files(self, meta, dirty, empty):
        d = self.dir
        mode = self.mode
        writable = mode == WRITE
        self.big = BigFiles(d, writable and not d.endswith(".in-memory"))
        self.fields = Table(os.path.join(d, "fields"), "fields", writable and not self.live_writer,
                            dirty or self.live_writer)
        self.actors = Table(os.path.join(d, "actors"), "actors", writable and not self.live_writer,
                            dirty or self.live_writer)
        if not self.live_writer:
            for what, table in (("fields", self.fields), ("actors", self.actors)):
                if len(table) < meta.get(what, 0):
                    raise StoreCorrupt("store/%s holds %d entries; the meta says %d"
                                       % (what, len(table), meta.get(what, 0)))
        self.field_names = self.fields.items
        self.field_ids = self.fields.ids
        self.actor_ids = self.actors.ids
        self.actor_table = bytearray(b"".join(struct.pack("<Q", a) for a in self.actors.items))
        if self.live_writer:
            self.live = Live(d, writer=False)
            _, n, heap, _ = self.live.hints()
            self.keys = KeyIndex(d, READ, n, heap, 0)
            self.visible = None
            return
        n, heap = meta.get("keys", 0), meta.get("heap", 0)
        if writable:
            self.live = Live(d, writer=True)
        try:
            self.keys = KeyIndex(d, mode, n, heap, 0 if dirty else meta.get("hash_blocks", 0))
        except HashDamaged:
            self.keys = KeyIndex(d, mode, n, heap, 0)
            self._rehash()
        if dirty:
            self.damaged |= self.keys.recover(n, heap)
            bitmaps.rebuild(self)
        else:
            self.keys.check_bounds()
            if not bitmaps.load(self):
                bitmaps.rebuild(self)
        if writable:
            self.end()
            self._take_digests(dirty)

    def _take_digests(self, dirty):
        """The digest tree a clean close saved (history/digests.py) is read
        and its file removed: it is valid only until the next write, and
        every write from here on is tracked in `touched`; close saves it
        again. After a crash (dirty) it is dropped and built afresh."""
        path = os.path.join(self.dir, DIGESTS)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        except OSError:
            data = None
        try:
            fs.unlink(path)
        except OSError as e:
            raise fs.error(e, "remove", path) from None
        if not dirty and data:
            self.saved_digests = data
            self.touched = set()

    def power_cut(self):
        """None after a clean close or a process crash; else "durable" or
        "relaxed": the mode of a writer of an earlier boot that left the
        store dirty (the machine lost power, or crashed)."""
        return self.lock.power_cut(self.was_clean) if self.lock is not None else None

    # -- the seqlock (writer side): begin() before changing mapped files, end() after

    def begin(self):
        if self.live is not None:
            self.live.begin()

    def end(self):
        if self.live is not None:
            self.live.end(self.keys)

    # -- arenas

    def arena(self, cls: int, free=None) -> Arena:
        a = self.arenas[cls]
        if a is None:
            path = os.path.join(self.dir, "arena.%d" % SIZE_CLASSES[cls])
            if self.mode == READ and not os.path.exists(path):
                raise BlobCorrupt(None, -1)  # a record names an arena that is not there
            a = self.arenas[cls] = Arena(path, SIZE_CLASSES[cls], free, self.mode)
        return a

    def _rehash(self):
        if self.mode == READ:
            self.keys.rebuild_private()
            return
        self.begin()
        try:
            self.keys.rehash()
        finally:
            self.end()

    # -- interned names

    def refresh_names(self) -> None:
        """Beside a live writer: read the names it interned since we opened."""
        if self.live_writer:
            d = self.dir
            self.fields = Table(os.path.join(d, "fields"), "fields", False, True)
            self.actors = Table(os.path.join(d, "actors"), "actors", False, True)
            self.field_names = self.fields.items
            self.field_ids = self.fields.ids
            self.actor_ids = self.actors.ids
            self.actor_table = bytearray(b"".join(struct.pack("<Q", a)
                                                  for a in self.actors.items))

    def field_id(self, name: str) -> int:
        return self.fields.add(name)

    def actor_index(self, actor: int) -> int:
        i = self.actor_ids.get(actor)
        if i is None:
            i = self.actors.add(actor)
            self.actor_table += struct.pack("<Q", actor)
        return i

    def actor_id(self, index: int) -> int:
        return struct.unpack_from("<Q", self.actor_table, index * 8)[0]

    # -- records

    def _consistent(self, fn, *args):
        """Run a read. Beside a live writer: under its seqlock, retrying when
        a write overlapped, after following any file it grew. Damage found
        with no write overlapping is raised (a bad hash block is rebuilt in
        this process's memory first)."""
        if not self.live_writer:
            try:
                return fn(*args)
            except HashDamaged:
                self._rehash()
                return fn(*args)
        state = [None]
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            ok, out = self._attempt(fn, args, state)
            if ok:
                return out
        raise self._busy()

    def _busy(self):
        return StoreLocked("the writer of %s keeps the store busy; try again" % self.dir)

    def _attempt(self, fn, args, state):
        """One try of a read under the live writer's seqlock: (True, result),
        or (False, None) if a write overlapped it. state[0] is the damage the
        last try found: the same damage twice with no write between is real."""
        g1, n, heap, blocks = self.live.hints()
        if g1 & 1:
            time.sleep(0.0005)
            return False, None
        k = self.keys
        k.n, k.heap_used = n, heap
        k.heap.refresh()
        k.tab.refresh()
        if k.hash.refresh() or blocks != k.hash_blocks():
            k._fit_hash()
        try:
            out, err = fn(*args), None
        except StoreCorrupt as e:
            out, err = None, e
        if self.live.generation() != g1:
            return False, None
        if err is None:
            return True, out
        last = state[0]
        if last is not None and type(last) is type(err):
            if isinstance(err, HashDamaged):
                self.keys.rebuild_private()
                return True, fn(*args)
            raise err
        state[0] = err
        return False, None

    def _blob(self, kid, cls, slot, key):
        """The checked blob in a record's slot; None if it has none."""
        if cls == NO_CLASS:
            if kid in self.damaged:
                raise BlobCorrupt(key, kid)
            return None
        got = None
        if cls == BIG:
            got = self.big.read(kid)
        elif cls < len(SIZE_CLASSES):
            a = self.arenas[cls]
            try:
                if a is None:
                    a = self.arena(cls)
                got = a.read(slot, kid)
            except BlobCorrupt:
                got = None
        if got is None:
            raise BlobCorrupt(key if key is not None else self.keys.key(kid).decode(
                "utf-8", "replace"), kid)
        return got[0]

    def _load(self, kb, key):
        kid, cls, slot = self.keys.find_entry(kb)
        if kid < 0:
            return None
        return self._blob(kid, cls, slot, key)

    def load(self, key: str):
        """The blob of key, or None. Raises BlobCorrupt on a bad checksum."""
        if self.live_writer:
            return self._consistent(self._load, key.encode("utf-8"), key)
        kb = key.encode("utf-8")
        try:
            kid, cls, slot = self.keys.find_entry(kb)
        except HashDamaged:
            self._rehash()
            kid, cls, slot = self.keys.find_entry(kb)
        if kid < 0:
            return None
        a = self.arenas[cls] if cls < _NCLASSES else None
        if a is not None:  # the read path, inline: one slot, its CRC
            f = a.file
            off = slot * a.size
            if off + a.size <= f.size:
                mm = f.mm
                crc, skid, lenflag = _SLOT.unpack_from(mm, off)
                n = lenflag & 0x7FFF
                if skid == kid and n <= a.size - 10:
                    blob = mm[off + 10:off + 10 + n]
                    if crc == _crc(blob, _crc(mm[off + 4:off + 10])):
                        return blob
        return self._blob(kid, cls, slot, key)

    def _load_id(self, kid, key):
        cls, slot = self.keys.location(kid)
        return self._blob(kid, cls, slot, key)

    def load_id(self, kid: int, key=None):
        return self._consistent(self._load_id, kid, key)

    def find(self, kb: bytes) -> int:
        if self.live_writer:
            return self._consistent(self.keys.find, kb)
        try:
            return self.keys.find_entry(kb)[0]
        except HashDamaged:
            self._rehash()
            return self.keys.find_entry(kb)[0]

    def load_many(self, kbs):
        """(key ids, blobs) for a list of encoded keys: -1 and b"" where
        absent. Raises BlobCorrupt like load()."""
        return self._consistent(self._load_many, kbs)

    def _load_many(self, kbs):
        find = self.keys.find_entry
        blob = self._blob
        kids, blobs = [], []
        for kb in kbs:
            kid, cls, slot = find(kb)
            kids.append(kid)
            blobs.append(b"" if kid < 0 else (blob(kid, cls, slot, None) or b""))
        return kids, blobs

    def make_room_one(self, kid, kb, n) -> None:
        """make_room for one record (the local write path): nothing to do
        unless a file must grow."""
        if n > MAX_BLOB or (kid < 0 and not self.keys.has_room(1, len(kb))):
            self.make_room(((kid, kb, n),))
        elif n:
            a = self.arenas[class_for(n)]
            if a is None or (not a.free and (kid < 0 or self.keys.location(kid)[0]
                                             != class_for(n))):
                self.make_room(((kid, kb, n),))

    def make_room(self, items) -> None:
        """Grow every file that saving items (a list of (key id or -1, key
        bytes, blob length)) could grow, so that the saves cannot fail for
        space after the op log holds their change. DiskFull if there is no
        room; nothing changes then."""
        new_keys = new_bytes = 0
        need = {}
        big = 0
        for kid, kb, n in items:
            if n > MAX_RECORD:
                raise RecordTooLarge("record %r would take %d bytes; the limit is %d. Split it "
                                     "into several records" % (kb.decode("utf-8", "replace"),
                                                               n, MAX_RECORD))
            if kid < 0:
                new_keys += 1
                new_bytes += len(kb)
            if n > MAX_BLOB:
                big += n
            elif n:
                cls = class_for(n)
                if kid < 0 or self.keys.location(kid)[0] != cls:
                    need[cls] = need.get(cls, 0) + 1
        if big and self.mode == WRITE:
            self._room_for_big(big)
        self.begin()  # a rehash rewrites keys.hash in place: readers must retry
        try:
            if new_keys:
                self.keys.ensure_room(new_keys, new_bytes)
            for cls, count in need.items():
                (self.arenas[cls] or self.arena(cls)).ensure_free(count)
        finally:
            self.end()

    def _room_for_big(self, n) -> None:
        """Big records are written whole after the log: check that they fit
        (with a margin of 1 MiB), since no file can be grown for them ahead."""
        try:
            st = os.statvfs(self.dir)
        except OSError:
            return
        free = st.f_bavail * st.f_frsize
        if free < 2 * n + (1 << 20):
            raise fs.error(OSError(28, "No space left on device"), "write a large record in",
                           self.dir)

    def save_group(self, changed, visible) -> None:
        """save() each (key id, key bytes, blob) of changed inside one
        begin()/end(); visible(blob) says whether a record shows. Call
        make_room() for them first."""
        self.begin()
        try:
            for kid, kb, b in changed:
                self.save(kb.decode("utf-8"), b, visible(b), kid, kb)
        finally:
            self.end()

    def save(self, key: str, blob: bytes, visible: bool, kid: int = None, kb=None) -> None:
        """Store blob as key's record. A blob that keeps its size class is
        rewritten in place; one that moves gets a new slot, then the index
        points to it, then the old slot is freed (its header zeroed). A write
        torn by a crash fails its CRC on the next open and is rebuilt from
        the op log. Call make_room() first (and begin()/end() around a group
        of saves). kid: the key's id, -1 if it is known to be absent, None
        to look it up."""
        if len(blob) > MAX_RECORD:
            raise RecordTooLarge("record %r would take %d bytes; the limit is %d. "
                                 "Split it into several records" % (key, len(blob), MAX_RECORD))
        keys = self.keys
        cls = (class_for(len(blob)) if len(blob) <= MAX_BLOB else BIG) if blob else NO_CLASS
        if kid is None:
            if kb is None:
                kb = key.encode("utf-8")
            kid = keys.find(kb)
        if kid < 0:  # a new key: its slot, then its entry naming the slot, then the blob
            if kb is None:
                kb = key.encode("utf-8")
            slot = 0
            if cls == BIG:
                kid = keys.add(kb, BIG, 0)
                self.big.write(kid, blob, visible)
            else:
                if blob:
                    a = self.arenas[cls] or self.arena(cls)
                    slot = a.alloc()
                kid = keys.add(kb, cls, slot)
                if blob:
                    a.write(slot, kid, blob, visible)
        else:
            old_cls, old_slot = keys.location(kid)
            if cls == old_cls and cls == BIG:
                self.big.write(kid, blob, visible)
            elif cls == old_cls and cls != NO_CLASS:
                self.arenas[cls].write(old_slot, kid, blob, visible)
            else:
                if cls == BIG:
                    self.big.write(kid, blob, visible)
                    keys.set_location(kid, BIG, 0, kb)
                elif blob:
                    a = self.arenas[cls] or self.arena(cls)
                    slot = a.alloc()
                    a.write(slot, kid, blob, visible)
                    keys.set_location(kid, cls, slot, kb)
                else:
                    keys.set_location(kid, NO_CLASS, 0)
                if old_cls == BIG:
                    self.big.release(kid)
                elif old_cls != NO_CLASS and old_cls < _NCLASSES and \
                        self.arenas[old_cls] is not None:
                    self.arenas[old_cls].release(old_slot)
        self.damaged.discard(kid)
        if self.touched is not None:
            self.touched.add(kid)
        if visible:
            self.visible.add(kid)
        else:
            self.visible.discard(kid)
        if self._watches:
            for w in list(self._watches):
                if key.startswith(w.prefix):
                    w.callback(key, blob)

    def _scan(self, prefix, limit=0):
        # nsmallest keeps only `limit` entries while it reads the rest
        return heapq.nsmallest(limit, self._visible(prefix)) if limit else sorted(
            self._visible(prefix))

    def _visible(self, prefix, lo=0, hi=None):
        """(key, key id) of the visible records under prefix, unordered
        (key ids from lo, below hi)."""
        keys = self.keys
        vis = self.visible
        for kid in keys.scan(prefix.encode("utf-8"), lo, hi):
            if vis is not None:
                if kid in vis:
                    yield keys.key(kid).decode("utf-8"), kid
                continue
            cls, slot = keys.location(kid)  # beside a live writer: the slot's own flag
            if cls == BIG:
                got = self.big.read(kid)
            elif cls == NO_CLASS or cls >= len(SIZE_CLASSES):
                continue
            else:
                try:
                    got = self.arena(cls).read(slot, kid)
                except BlobCorrupt:
                    got = None
            if got is not None and got[1]:
                yield keys.key(kid).decode("utf-8"), kid

    def scan(self, prefix: str = "", limit: int = 0):
        """Sorted list of (key, key id) of visible records under prefix (the
        first `limit` of them if limit)."""
        if not self.live_writer:
            return self._consistent(self._scan, prefix, limit)
        # Beside a live writer a whole scan seldom fits between two of its
        # writes (a put every 20 us), and retried whole it would starve. It
        # is read in runs of key ids instead, each consistent on its own and
        # sized to fit: a key is listed if it was visible when its run was read.
        found, lo, step = [], 0, 256
        state = [None]
        deadline = time.monotonic() + 30.0
        while True:
            ok, got = self._attempt(self._scan_run, (prefix, lo, lo + step), state)
            if ok:
                found += got[0]
                lo += step
                if lo >= got[1]:
                    break
                step = min(step * 2, 4096)
            else:
                step = max(step // 2, 8)
                if time.monotonic() > deadline:
                    raise self._busy()
        return heapq.nsmallest(limit, found) if limit else sorted(found)

    def _scan_run(self, prefix, lo, hi):
        return list(self._visible(prefix, lo, hi)), self.keys.n

    def count(self) -> int:
        if self.visible is None:
            return len(self.scan(""))
        return len(self.visible)

    def watch(self, prefix: str, callback) -> Watch:
        """Call callback(key, blob) after each save under prefix."""
        w = Watch(self, prefix, callback)
        self._watches.append(w)
        return w

    def data_bytes(self) -> int:
        """Bytes in use: live slots plus the key index (not file slack)."""
        k = self.keys
        total = k.heap_used + 16 + k.n * 16 + k.hash_blocks() * 512
        for a in self.arenas:
            if a is not None:
                total += (a.capacity - len(a.free)) * a.size
        return total + len(self.actor_table) + self.big.bytes()

    def trim(self) -> None:
        """Unmap every resident page of the store's files from this process:
        RSS falls back to the interpreter's own; the data stays in the page
        cache and in the files."""
        for a in self.arenas:
            if a is not None:
                a.file.trim()
        self.keys.trim()

    def file_bytes(self) -> int:
        total = 0
        for n in os.listdir(self.dir) if os.path.isdir(self.dir) else ():
            try:
                total += os.path.getsize(os.path.join(self.dir, n))
            except OSError:
                pass
        return total + self.big.bytes()

    # -- lifecycle

    def checkpoint(self, node_meta: dict) -> None:
        """Flush every file, then record in the meta (with node_meta: the log
        position and the node's counters) that the store holds everything
        up to that point."""
        if self.mode != WRITE:
            return
        try:
            for a in self.arenas:
                if a is not None:
                    a.flush()
            self.keys.flush()
            self.fields.sync()
            self.actors.sync()
            self.big.sync()
        except OSError as e:
            raise fs.error(e, "flush", self.dir) from None
        bitmaps.write(self)
        meta = dict(node_meta)
        meta.update(keys=self.keys.n, heap=self.keys.heap_used,
                    hash_blocks=self.keys.hash_blocks(), fields=len(self.fields),
                    actors=len(self.actors))
        files = [self.keys.heap, self.keys.tab, self.keys.hash] + [
            a.file for a in self.arenas if a is not None]
        meta["sizes"] = {os.path.basename(f.path): f.size for f in files}
        self._write_meta(meta)

    def _write_meta(self, meta):
        body = json.dumps(meta, separators=(",", ":")).encode()
        fs.atomic_write(os.path.join(self.dir, "meta"),
                        _meta_hdr.pack(META_VERSION, 0, 0, zlib.crc32(body)) + body)
        self.meta = meta

    def close(self, node_meta: dict = None) -> None:
        """Checkpoint (with node_meta), then mark the store clean. A failed
        checkpoint (a full disk) leaves it dirty: the next open recovers."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.mode == WRITE:
                if node_meta is None:
                    node_meta = {k: v for k, v in self.meta.items()
                                 if k not in ("keys", "heap", "hash_blocks", "fields", "actors")}
                self.checkpoint(node_meta)
                self.end()
                if self.digests is None and self.saved_digests is not None:
                    from ..history.digests import Digests   # cheap: from the saved one
                    self.digests = Digests(self)
                saved = self.digests.dump() if self.digests is not None else None
                if saved is not None:
                    fs.atomic_write(os.path.join(self.dir, DIGESTS), saved)
                fd = fs.open_fd(os.path.join(self.dir, CLEAN), os.O_WRONLY | os.O_CREAT)
                fs.close(fd)
                fs.fsync_dir(self.dir)
        finally:
            self._release()

    def _release(self):
        for a in self.arenas:
            if a is not None:
                a.close()
        self.arenas = [None] * len(SIZE_CLASSES)
        for x in (self.keys, self.fields, self.actors, self.live):
            if x is not None:
                x.close()
        self.keys = self.fields = self.actors = self.live = None
        if self.lock is not None:
            self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
