"""Op-log segment files (docs/FORMAT.md, "Op-log segment").

Version 2: `MYCL`, u8 2, then self-delimiting entries
    u32 marker 0x1A454DD7 ("\\xd7ME\\x1a"), u32 length, u32 crc32(length + payload), payload
A damaged entry is skipped by searching for the next marker that starts a
whole entry whose CRC holds, so one bad entry never hides the ones after it.

Version 1 (read only): `MYCL`, u8 1, entries u32 length, u32 crc32(payload),
payload; no marker, so a reader stops at the first bad entry.
"""
import struct
import zlib

MAGIC_V1 = b"MYCL\x01"
MAGIC = b"MYCL\x02"
HEADER_LEN = len(MAGIC)
MARKER = b"\xd7ME\x1a"
ENTRY = struct.Struct("<4sII")
ENTRY_LEN = ENTRY.size  # 12
ENTRY_V1 = struct.Struct("<II")
MAX_ENTRY = 16 * 1024 * 1024 + 4096
_crc = zlib.crc32
_u32 = struct.Struct("<I")
CHUNK = 1 << 20


def frame(payload) -> bytes:
    n = len(payload)
    return ENTRY.pack(MARKER, n, _crc(payload, _crc(_u32.pack(n)))) + payload


def _entry_at(f, pos, size):
    """The payload of a whole, valid entry at pos, else None."""
    if pos + ENTRY_LEN > size:
        return None
    f.seek(pos)
    hdr = f.read(ENTRY_LEN)
    if len(hdr) < ENTRY_LEN:
        return None
    marker, n, crc = ENTRY.unpack(hdr)
    if marker != MARKER or n > MAX_ENTRY or pos + ENTRY_LEN + n > size:
        return None
    payload = f.read(n)
    if len(payload) < n or _crc(payload, _crc(hdr[4:8])) != crc:
        return None
    return payload


def _resync(f, pos, size):
    """Offset of the first valid entry at or after pos, else size."""
    while pos < size:
        f.seek(pos)
        chunk = f.read(min(CHUNK, size - pos) + len(MARKER) - 1)
        if not chunk:
            return size
        i = chunk.find(MARKER)
        while i >= 0:
            if _entry_at(f, pos + i, size) is not None:
                return pos + i
            i = chunk.find(MARKER, i + 1)
        pos += max(1, len(chunk) - (len(MARKER) - 1))
    return size


def scan(f, start, size, version=2):
    """Yield (offset, payload, end) over [start, size): payload is the bytes
    of a whole valid entry ending at end, or None for a damaged run of bytes
    [offset, end) that was skipped. A damaged run that reaches `size` is a
    torn or damaged tail."""
    pos = start
    f.seek(pos)
    read = f.read
    if version == 1:
        while pos < size:
            hdr = read(8)
            if len(hdr) < 8:
                break
            n, crc = ENTRY_V1.unpack(hdr)
            payload = read(n) if n <= MAX_ENTRY and pos + 8 + n <= size else b""
            if len(payload) < n or n > MAX_ENTRY or _crc(payload) != crc:
                break
            yield pos, payload, pos + 8 + n
            pos += 8 + n
        if pos < size:
            yield pos, None, size
        return
    unpack = ENTRY.unpack
    while pos < size:
        hdr = read(ENTRY_LEN)
        payload = None
        if len(hdr) == ENTRY_LEN:
            marker, n, crc = unpack(hdr)
            if marker == MARKER and n <= MAX_ENTRY and pos + ENTRY_LEN + n <= size:
                payload = read(n)
                if len(payload) < n or _crc(payload, _crc(hdr[4:8])) != crc:
                    payload = None
        if payload is not None:
            end = pos + ENTRY_LEN + n
            yield pos, payload, end
            pos = end
            continue
        nxt = _resync(f, pos + 1, size)
        yield pos, None, nxt
        pos = nxt
        f.seek(pos)
