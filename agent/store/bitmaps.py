"""The store's bitmaps (docs/FORMAT.md, store file `bitmaps`): free slots per
size class and the visible key ids, written at each checkpoint, rebuilt from
the key table and the slots after a crash or when they fail their CRC."""
import os
import struct
import zlib

from pyroaring import BitMap

from .. import fs
from .arena import SIZE_CLASSES
from .keyindex import NO_CLASS, BIG, NEEDS_REPAIR

__all__ = ["load", "write", "rebuild"]

_entry = struct.Struct("<HI")
_u32 = struct.Struct("<I")
VISIBLE_CLASS = 0xFFFF


def load(store) -> bool:
    """Read the bitmaps into store (its arenas and `visible`); False if they
    are missing or fail a check (the caller rebuilds them)."""
    path = os.path.join(store.dir, "bitmaps")
    try:
        data = fs.read_file(path)
    except FileNotFoundError:
        store.visible = BitMap()
        return store.keys.n == 0
    except OSError as e:
        raise fs.error(e, "read", path) from None
    if len(data) < 4 or zlib.crc32(data[4:]) != _u32.unpack_from(data)[0]:
        return False
    p = 4
    maps = {}
    try:
        while p < len(data):
            cls, n = _entry.unpack_from(data, p)
            p += 6
            maps[cls] = BitMap.deserialize(data[p:p + n])
            p += n
    except (struct.error, ValueError):
        return False
    visible = maps.pop(VISIBLE_CLASS, BitMap())
    if (visible and visible.max() >= store.keys.n) or any(c >= len(SIZE_CLASSES) for c in maps):
        return False
    store.visible = visible
    for cls, free in maps.items():
        store.arena(cls, free)
    return True


def write(store) -> None:
    parts = []
    for cls, a in enumerate(store.arenas):
        if a is not None:
            raw = a.free.serialize()
            parts.append(_entry.pack(cls, len(raw)) + raw)
    raw = store.visible.serialize()
    parts.append(_entry.pack(VISIBLE_CLASS, len(raw)) + raw)
    body = b"".join(parts)
    fs.atomic_write(os.path.join(store.dir, "bitmaps"), _u32.pack(zlib.crc32(body)) + body)


def rebuild(store) -> None:
    """Which slots are used, which records are visible, which blobs are
    damaged (added to store.damaged): one pass over the key table and the
    slots."""
    used = {}
    names = set(os.listdir(store.dir)) if os.path.isdir(store.dir) else set()
    for cls, size in enumerate(SIZE_CLASSES):
        name = "arena.%d" % size
        if name in names and store.arenas[cls] is None and \
                os.path.getsize(os.path.join(store.dir, name)) > 0:  # an empty one holds nothing
            store.arena(cls, BitMap())
    store.visible = BitMap()
    keys = store.keys
    for kid, cls, slot in keys.entries():
        if cls == NO_CLASS:
            continue
        if cls == NEEDS_REPAIR:     # marked by an open that died before it repaired
            store.damaged.add(kid)
            continue
        u = used.setdefault(cls, BitMap())
        got = None
        if cls == BIG:
            got = store.big.read(kid)
        elif cls < len(SIZE_CLASSES) and slot not in u and store.arenas[cls] is not None:
            got = store.arenas[cls].read(slot, kid)
        if got is None:
            keys.set_location(kid, NEEDS_REPAIR, 0)
            store.damaged.add(kid)
            continue
        if cls != BIG:
            u.add(slot)
        if got[1]:
            store.visible.add(kid)
    for cls, a in enumerate(store.arenas):
        if a is not None:
            a.free = BitMap(range(a.capacity)) - used.get(cls, BitMap())
