"""Snapshot files (docs/FORMAT.md, "Snapshot"): every record of a store
with its full CRDT metadata, as of one position of the op log.

    "MYCS" u8 1
    u32 n, n bytes of header JSON, u32 crc32(header)
    frames: u32 m (> 0), u32 crc32(body), body = one zstd frame whose
            content is records: varint len, key, varint len, blob
    end:    u32 0, u32 crc32(count), u64 count of records

The header names the store's field and actor tables (the blobs' ids index
them), what the snapshot holds (`known`), the changes no longer in the log
(`dropped`), the signed heads and the clock. A snapshot is written as a temp
file, fsynced and renamed, so a crash leaves the old one or the new one.
Reading checks every CRC and bounds every size before allocating; a reader
that meets damage raises SnapshotCorrupt, so nothing of a bad snapshot is
applied when it is verified first (`verify`).
"""
import json
import os
import struct
import zlib

from .. import fs
from ..codec import get_varint, put_varint
from ..errors import MalformedChange, RemoteError

__all__ = ["MAGIC", "SnapshotCorrupt", "Writer", "Reader", "write_store", "FRAME_RAW"]

MAGIC = b"MYCS\x01"
FRAME_RAW = 256 << 10             # raw record bytes per frame (a bigger record gets its own)
MAX_FRAME_RAW = (16 << 20) + (64 << 10)   # one record of the largest size, and its key
MAX_HEADER = 64 << 20
LEVEL = 3
_u32 = struct.Struct("<I")
_u64 = struct.Struct("<Q")
_crc = zlib.crc32


class SnapshotCorrupt(RemoteError):
    """A snapshot (from a peer, or this device's own) does not read back:
    its bytes are damaged or it was cut short."""


class Writer:
    """Stream records into a new snapshot at path (written whole or not at all)."""

    def __init__(self, path: str, header: dict):
        self.path = path
        self.tmp = "%s.%d.tmp" % (path, os.getpid())
        self.count = 0
        self.bytes = 0
        self._buf = bytearray()
        import zstandard
        self._z = zstandard.ZstdCompressor(level=LEVEL, write_content_size=True)
        body = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
        try:
            self.fd = fs.open_fd(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        except OSError as e:
            raise fs.error(e, "write", self.tmp) from None
        self._write(MAGIC + _u32.pack(len(body)) + body + _u32.pack(_crc(body)))

    def _write(self, data):
        try:
            fs.write(self.fd, data)
        except OSError as e:
            self.abort()
            raise fs.error(e, "write", self.tmp) from None
        self.bytes += len(data)

    def add(self, key: bytes, blob: bytes) -> None:
        b = self._buf
        if b and len(b) + len(key) + len(blob) + 10 > FRAME_RAW:
            self._flush()
        put_varint(b, len(key))
        b += key
        put_varint(b, len(blob))
        b += blob
        self.count += 1

    def _flush(self):
        if self._buf:
            body = self._z.compress(bytes(self._buf))
            self._buf.clear()
            self._write(_u32.pack(len(body)) + _u32.pack(_crc(body)) + body)

    def finish(self) -> int:
        """Close the file and put it in place; returns its size."""
        self._flush()
        c = _u64.pack(self.count)
        self._write(_u32.pack(0) + _u32.pack(_crc(c)) + c)
        try:
            fs.fsync(self.fd)
            fs.close(self.fd)
            self.fd = -1
            fs.rename(self.tmp, self.path)
            fs.fsync_dir(os.path.dirname(self.path) or ".")
        except OSError as e:
            self.abort()
            raise fs.error(e, "put in place", self.path) from None
        return self.bytes

    def abort(self) -> None:
        self.fd = fs.close_quietly(self.fd)
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


class Reader:
    """Read a snapshot file: .header, then records() yields (key bytes, blob)
    frame by frame (at most one frame in memory). Raises SnapshotCorrupt."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.f = open(path, "rb")
        except FileNotFoundError:
            raise
        except OSError as e:
            raise fs.error(e, "read", path) from None
        try:
            self.size = os.fstat(self.f.fileno()).st_size
            head = self.f.read(len(MAGIC) + 4)
            if len(head) < len(MAGIC) + 4 or head[:len(MAGIC)] != MAGIC:
                raise self._bad("it does not start with a snapshot header (version 1)")
            n = _u32.unpack_from(head, len(MAGIC))[0]
            if n > MAX_HEADER or n + 4 > self.size - len(head):
                raise self._bad("its header of %d bytes runs past the file" % n)
            body = self.f.read(n)
            crc = self.f.read(4)
            if len(body) < n or len(crc) < 4 or _crc(body) != _u32.unpack(crc)[0]:
                raise self._bad("its header fails its checksum")
            try:
                self.header = json.loads(body)
                if not isinstance(self.header, dict):
                    raise ValueError
            except ValueError:
                raise self._bad("its header is not JSON") from None
        except BaseException:
            self.f.close()
            raise
        self.count = None

    def _bad(self, why):
        return SnapshotCorrupt("snapshot %s is damaged: %s" % (self.path, why))

    def frames(self):
        """Yield the decoded body of each frame; checks the end marker."""
        import zstandard
        z = zstandard.ZstdDecompressor()
        read = self.f.read
        while True:
            hdr = read(8)
            if len(hdr) < 8:
                raise self._bad("it was cut short (no end marker)")
            m, crc = _u32.unpack_from(hdr, 0)[0], _u32.unpack_from(hdr, 4)[0]
            if m == 0:
                c = read(8)
                if len(c) < 8 or _crc(c) != crc:
                    raise self._bad("its end marker fails its checksum")
                self.count = _u64.unpack(c)[0]
                if read(1):
                    raise self._bad("bytes follow its end marker")
                return
            if m > MAX_FRAME_RAW + (1 << 16):
                raise self._bad("a frame of %d bytes is over the limit" % m)
            body = read(m)
            if len(body) < m or _crc(body) != crc:
                raise self._bad("a frame fails its checksum")
            try:
                params = zstandard.get_frame_parameters(body)
                if params.content_size > MAX_FRAME_RAW:
                    raise self._bad("a frame declares %d bytes" % params.content_size)
                yield z.decompress(body, max_output_size=MAX_FRAME_RAW)
            except zstandard.ZstdError as e:
                raise self._bad("a frame does not decompress (%s)" % e) from None

    def records(self):
        n = 0
        for raw in self.frames():
            p, end = 0, len(raw)
            try:
                while p < end:
                    kl, p = get_varint(raw, p)
                    if p + kl > end:
                        raise MalformedChange("key runs past its frame")
                    key = bytes(raw[p:p + kl])
                    p += kl
                    bl, p = get_varint(raw, p)
                    if p + bl > end:
                        raise MalformedChange("blob runs past its frame")
                    yield key, bytes(raw[p:p + bl])
                    p += bl
                    n += 1
            except MalformedChange as e:
                raise self._bad(str(e)) from None
        if n != self.count:
            raise self._bad("it holds %d records but says %d" % (n, self.count))

    def verify(self) -> int:
        """Read it all, checking every checksum; returns the record count."""
        n = sum(1 for _ in self.records())
        return n

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_store(path: str, store, header: dict) -> dict:
    """Write every record of `store` (its blob as stored, tombstones too) as
    a snapshot; header gets the store's field and actor tables. Returns
    {"records", "bytes"}."""
    h = dict(header)
    h["fields"] = list(store.field_names)
    h["actors"] = ["%016x" % a for a in store.actors.items]
    w = Writer(path, h)
    try:
        keys = store.keys
        for kid in range(keys.n):
            blob = store.load_id(kid)
            if blob:
                w.add(bytes(keys.key(kid)), bytes(blob))
        size = w.finish()
    except BaseException:
        w.abort()
        raise
    return {"records": w.count, "bytes": size}
