"""One pool of fixed-size slots for one size class, in one mmap'd file.

Slot layout (docs/FORMAT.md): u32 crc32(key id + blob), u32 key id,
u16 length | 0x8000 if the record is visible, blob bytes.
"""
import struct
import zlib

from pyroaring import BitMap

from .mapped import MappedFile

HEADER = struct.Struct("<IIH")
HSIZE = HEADER.size  # 10
VISIBLE = 0x8000
# slot sizes: every 16 bytes up to 256, then steps of about 1.25x, up to 32 KiB
SIZE_CLASSES = tuple(range(16, 257, 16)) + (
    320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072,
    3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384, 20480,
    24576, 28672, 32768)
MAX_BLOB = SIZE_CLASSES[-1] - HSIZE
_crc = zlib.crc32
_key = struct.Struct("<I")


def class_for(n: int) -> int:
    """Index of the smallest size class holding a blob of n bytes."""
    need = n + HSIZE
    if need <= 256:
        return (need + 15) // 16 - 1
    for i in range(16, len(SIZE_CLASSES)):
        if SIZE_CLASSES[i] >= need:
            return i
    raise ValueError(n)


def slot_crc(key_id: int, blob) -> int:
    return _crc(blob, _crc(_key.pack(key_id)))


class Arena:
    """Slots of one size. `free` lists the unused slots below the file's end."""

    __slots__ = ("size", "file", "free", "capacity")

    def __init__(self, path: str, size: int, free: BitMap = None):
        self.size = size
        self.file = MappedFile(path, min_size=size * 64)
        self.capacity = self.file.size // size
        self.free = free if free is not None else BitMap(range(self.capacity))

    def alloc(self) -> int:
        free = self.free
        if not free:
            old = self.capacity
            self.file.ensure((old * 2) * self.size)
            self.capacity = self.file.size // self.size
            free.add_range(old, self.capacity)
        slot = free.min()
        free.remove(slot)
        return slot

    def release(self, slot: int) -> None:
        self.free.add(slot)

    def write(self, slot: int, key_id: int, blob, visible: bool) -> None:
        off = slot * self.size
        n = len(blob)
        mm = self.file.mm
        mm[off + HSIZE:off + HSIZE + n] = blob
        HEADER.pack_into(mm, off, slot_crc(key_id, blob), key_id,
                         n | VISIBLE if visible else n)

    def read(self, slot: int):
        """-> (crc, key_id, length_and_flag, blob) without checking."""
        off = slot * self.size
        mm = self.file.mm
        crc, kid, ln = HEADER.unpack_from(mm, off)
        n = ln & 0x7FFF
        if HSIZE + n > self.size:
            return crc, kid, ln, None
        return crc, kid, ln, mm[off + HSIZE:off + HSIZE + n]

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()
