"""Records larger than the largest arena slot (32 KiB), up to MAX_RECORD:
one file each, `store/big/KID` (docs/FORMAT.md).

    u32 crc32(everything after it), u32 key id, u32 length | 0x80000000 if visible, blob

The key index names such a record with the size class BIG and slot 0. Like
the arenas, these files are a cache of the op log: a file is replaced by a
temp file and a rename (a crash leaves the old or the new one), fsynced at
the store's next checkpoint, and one that fails its CRC is rebuilt from the
log. A process that must not write (PRIVATE mode) keeps its writes in memory.
"""
import os
import struct
import zlib

from .. import fs

__all__ = ["BigFiles", "MAX_RECORD"]

MAX_RECORD = 16 << 20
_HDR = struct.Struct("<III")
VISIBLE = 0x80000000


class BigFiles:
    def __init__(self, store_dir: str, writable: bool):
        self.dir = os.path.join(store_dir, "big")
        self.writable = writable
        self.overlay = {}        # PRIVATE mode: key id -> (blob, visible), or None if released
        self.unsynced = set()

    def path(self, kid: int) -> str:
        return os.path.join(self.dir, "%d" % kid)

    def read(self, kid: int):
        """(blob, visible) of a record kept here, or None if missing or damaged."""
        if kid in self.overlay:
            return self.overlay[kid]
        try:
            data = fs.read_file(self.path(kid))
        except FileNotFoundError:
            return None
        except OSError as e:
            raise fs.error(e, "read", self.path(kid)) from None
        if len(data) < _HDR.size:
            return None
        crc, fkid, lenflag = _HDR.unpack_from(data)
        n = lenflag & ~VISIBLE
        if fkid != kid or n != len(data) - _HDR.size or crc != zlib.crc32(
                memoryview(data)[4:]):
            return None
        return data[_HDR.size:], bool(lenflag & VISIBLE)

    def write(self, kid: int, blob: bytes, visible: bool) -> None:
        if not self.writable:
            self.overlay[kid] = (bytes(blob), visible)
            return
        body = _HDR.pack(0, kid, len(blob) | (VISIBLE if visible else 0))[4:] + blob
        data = struct.pack("<I", zlib.crc32(body)) + body
        if not os.path.isdir(self.dir):
            fs.mkdir(self.dir)
        path = self.path(kid)
        tmp = path + ".tmp"
        try:
            fd = fs.open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                fs.write(fd, data)
            finally:
                fs.close(fd)
            fs.rename(tmp, path)
        except OSError as e:
            raise fs.error(e, "write", path) from None
        self.unsynced.add(kid)

    def release(self, kid: int) -> None:
        if not self.writable:
            self.overlay[kid] = None
            return
        self.unsynced.discard(kid)
        try:
            fs.unlink(self.path(kid))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise fs.error(e, "remove", self.path(kid)) from None

    def sync(self) -> None:
        """Make every file written since the last sync durable (at a checkpoint)."""
        if not self.unsynced:
            return
        for kid in sorted(self.unsynced):
            try:
                fd = fs.open_fd(self.path(kid), os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fs.fsync(fd)
            finally:
                fs.close(fd)
        fs.fsync_dir(self.dir)
        self.unsynced.clear()

    def kids(self):
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return [int(n) for n in names if n.isdigit()]

    def bytes(self) -> int:
        total = 0
        for kid in self.kids():
            try:
                total += os.path.getsize(self.path(kid))
            except OSError:
                pass
        return total
