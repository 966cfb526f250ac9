"""Op-log segment files: `MYCL`, u8 version, then entries of
u32 length, u32 crc32(payload), payload (docs/FORMAT.md)."""
import struct
import zlib

MAGIC = b"MYCL\x01"
ENTRY = struct.Struct("<II")
MAX_ENTRY = 16 * 1024 * 1024 + 4096


def scan(f, start: int):
    """Yield (offset, payload) for each whole, valid entry from start.
    Stops at the first short or corrupt entry; the caller learns where the
    valid part ends from the last offset + size."""
    f.seek(start)
    pos = start
    read = f.read
    while True:
        hdr = read(8)
        if len(hdr) < 8:
            return
        n, crc = ENTRY.unpack(hdr)
        if n > MAX_ENTRY:
            return
        payload = read(n)
        if len(payload) < n or zlib.crc32(payload) != crc:
            return
        yield pos, payload
        pos += 8 + n


def frame(payload: bytes) -> bytes:
    return ENTRY.pack(len(payload), zlib.crc32(payload)) + payload
