"""One pool of fixed-size slots for one size class, in one mmap'd file.

Slot layout (docs/FORMAT.md, store version 2):
    u32 crc32(u32 key id, u16 length | 0x8000 if visible, blob), u32 key id,
    u16 length | 0x8000 if the record is visible, blob bytes
The CRC covers the visible flag and the length too, and a freed slot's
header is zeroed, so neither a flipped flag nor a stale copy of a record
that moved can pass for the live one.
"""
import struct
import zlib

from pyroaring import BitMap

from .mapped import MappedFile, WRITE, READ

HEADER = struct.Struct("<IIH")
HSIZE = HEADER.size  # 10
_TAIL = struct.Struct("<IH")
VISIBLE = 0x8000
# slot sizes: every 16 bytes up to 256, then steps of about 1.25x, up to 32 KiB
SIZE_CLASSES = tuple(range(16, 257, 16)) + (
    320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072,
    3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384, 20480,
    24576, 28672, 32768)
MAX_BLOB = SIZE_CLASSES[-1] - HSIZE
_crc = zlib.crc32
_ZERO_HEADER = bytes(HSIZE)


def class_for(n: int) -> int:
    """Index of the smallest size class holding a blob of n bytes."""
    need = n + HSIZE
    if need <= 256:
        return (need + 15) // 16 - 1
    for i in range(16, len(SIZE_CLASSES)):
        if SIZE_CLASSES[i] >= need:
            return i
    raise ValueError(n)


def slot_crc(key_id: int, lenflag: int, blob) -> int:
    return _crc(blob, _crc(_TAIL.pack(key_id, lenflag)))


class Arena:
    """Slots of one size. `free` lists the unused slots below the file's end."""

    __slots__ = ("size", "file", "free", "capacity")

    def __init__(self, path: str, size: int, free: BitMap = None, mode: str = WRITE):
        self.size = size
        self.file = MappedFile(path, min_size=size * 64 if mode != READ else 0, mode=mode)
        self.capacity = self.file.size // size
        if free is None:
            free = BitMap(range(self.capacity))
        elif free and free.max() >= self.capacity:  # the file is shorter than the bitmap says
            free &= BitMap(range(self.capacity))
        self.free = free

    def ensure_free(self, count: int = 1) -> None:
        """Make sure the next `count` alloc() calls will not need to grow the
        file (DiskFull, and the file as it was, if it cannot grow)."""
        if len(self.free) >= count:
            return
        # the least that will do; the file doubles past it when the disk has room
        self.file.ensure(max(self.capacity + count - len(self.free), 64) * self.size)
        old = self.capacity
        self.capacity = self.file.size // self.size
        self.free.add_range(old, self.capacity)

    def alloc(self) -> int:
        self.ensure_free()
        slot = self.free.min()
        self.free.remove(slot)
        return slot

    def release(self, slot: int) -> None:
        off = slot * self.size
        self.file.mm[off:off + HSIZE] = _ZERO_HEADER
        self.free.add(slot)

    def write(self, slot: int, key_id: int, blob, visible: bool) -> None:
        off = slot * self.size
        n = len(blob)
        lenflag = n | VISIBLE if visible else n
        mm = self.file.mm
        mm[off + HSIZE:off + HSIZE + n] = blob
        HEADER.pack_into(mm, off, slot_crc(key_id, lenflag, blob), key_id, lenflag)

    def read(self, slot: int, kid: int):
        """(blob, visible) of slot if it holds kid's record and its CRC holds,
        else None."""
        off = slot * self.size
        if off + self.size > self.file.size and not self.file.refresh():
            return None
        if off + self.size > self.file.size:
            return None
        mm = self.file.mm
        crc, skid, lenflag = HEADER.unpack_from(mm, off)
        n = lenflag & 0x7FFF
        if skid != kid or HSIZE + n > self.size:
            return None
        blob = mm[off + HSIZE:off + HSIZE + n]
        if crc != _crc(blob, _crc(mm[off + 4:off + HSIZE])):
            return None
        return blob, bool(lenflag & VISIBLE)

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()
