"""Sync frames (docs/SYNC.md): a length, a version byte, one zstd frame.

    u32   n        length of what follows (little-endian), 2 <= n <= MAX_WIRE
    u8    version  FRAME_VERSION
    n-1   bytes    one zstd frame: declared content size <= MAX_DECODED,
                   window <= MAX_WINDOW, nothing after it

Every check runs before memory for the decoded payload is allocated: the
length prefix is capped before the bytes are buffered, the zstd header is
read before decompressing (no content size, a size over the cap, or a window
over the cap are refused), and the decompression itself is a streaming read
bounded by the declared size, so a header that lies cannot make it allocate
more. Each failure is a MalformedFrame subclass: the session that met it is
closed and nothing from the frame is applied.
"""
import struct

import zstandard

from ..errors import RemoteError

__all__ = [
    "FRAME_VERSION", "MAX_DECODED", "MAX_WINDOW", "MAX_WIRE", "MalformedFrame",
    "FrameTooLarge", "BadCompression", "MissingContentSize", "WindowTooLarge",
    "SizeMismatch", "BadFrameVersion", "ProtocolError", "encode_frame", "decode_payload",
    "FrameReader",
]

FRAME_VERSION = 1
MAX_DECODED = 16 << 20          # decoded bytes per frame
MAX_WINDOW = 8 << 20            # zstd window
MAX_WIRE = MAX_DECODED + (64 << 10)   # compressed bytes per frame (zstd's worst case fits)
LEVEL = 3
_u32 = struct.Struct("<I")
_HDR = 5


class MalformedFrame(RemoteError):
    """A peer sent bytes that are not a valid sync frame or message."""


class FrameTooLarge(MalformedFrame):
    pass


class BadCompression(MalformedFrame):
    pass


class MissingContentSize(MalformedFrame):
    pass


class WindowTooLarge(MalformedFrame):
    pass


class SizeMismatch(MalformedFrame):
    pass


class BadFrameVersion(MalformedFrame):
    pass


class ProtocolError(MalformedFrame):
    """A well-formed frame whose message is unknown, malformed or out of turn."""


OUR_WINDOW = 1 << 21            # the window our writers use
_cparams = zstandard.ZstdCompressionParameters.from_level(
    LEVEL, window_log=21, write_content_size=True)
_cctx = zstandard.ZstdCompressor(compression_params=_cparams)
_dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)


def encode_frame(payload) -> bytes:
    """One frame holding payload (at most MAX_DECODED bytes)."""
    if len(payload) > MAX_DECODED:
        raise ValueError("sync payload of %d bytes exceeds the %d-byte frame cap"
                         % (len(payload), MAX_DECODED))
    z = _cctx.compress(payload)
    return _u32.pack(len(z) + 1) + bytes((FRAME_VERSION,)) + z


def decode_payload(z) -> bytes:
    """The decoded payload of one zstd frame, or a MalformedFrame subclass."""
    try:
        params = zstandard.get_frame_parameters(z)
    except zstandard.ZstdError as e:
        raise BadCompression("frame is not zstd data (%s)" % e) from None
    size = params.content_size
    if size in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
        raise MissingContentSize("frame does not declare its decoded size")
    if size > MAX_DECODED:
        raise FrameTooLarge("frame declares %d decoded bytes, over the %d-byte cap"
                            % (size, MAX_DECODED))
    if params.window_size > MAX_WINDOW:
        raise WindowTooLarge("frame needs a %d-byte zstd window, over the %d-byte cap"
                             % (params.window_size, MAX_WINDOW))
    # Streaming read bounded by the declared size (+1 to see a lie); frames
    # glued after the first are read too, so trailing data counts as a lie.
    # A frame with a window over what our writers use gets a decompressor of
    # its own, freed with it: the shared one would keep that window's buffer
    # (8 MiB from a hostile peer) for the life of the process.
    dctx = _dctx if params.window_size <= OUR_WINDOW else zstandard.ZstdDecompressor(
        max_window_size=MAX_WINDOW)
    out = bytearray()
    try:
        with dctx.stream_reader(z, read_size=1 << 17, read_across_frames=True) as r:
            while len(out) <= size:
                chunk = r.read(min(1 << 20, size + 1 - len(out)))
                if not chunk:
                    break
                out += chunk
    except zstandard.ZstdError as e:
        msg = str(e)
        if "too small" in msg or "orruption" in msg:
            raise SizeMismatch("frame does not decode to its declared size (%s)" % msg) from None
        raise BadCompression("frame fails to decompress (%s)" % msg) from None
    if len(out) != size:
        raise SizeMismatch("frame decodes to %s bytes, not the %d it declares"
                           % ("more than %d" % size if len(out) > size else len(out), size))
    return bytes(out)


class FrameReader:
    """Incremental splitter: feed() bytes as they come, then next() payloads."""

    def __init__(self):
        self._buf = bytearray()
        self._pos = 0
        self.wire_bytes = 0

    def feed(self, data) -> None:
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data
        self.wire_bytes += len(data)

    def next(self):
        """The decoded payload of the next whole frame, or None if it has not
        all arrived. Raises a MalformedFrame subclass for a bad frame."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        n = _u32.unpack_from(buf, pos)[0]
        if n > MAX_WIRE:
            raise FrameTooLarge("frame length %d is over the %d-byte cap" % (n, MAX_WIRE))
        if n < 2:
            raise BadCompression("frame length %d is too short" % n)
        if len(buf) - pos < 4 + n:
            return None
        if buf[pos + 4] != FRAME_VERSION:
            raise BadFrameVersion("frame version %d is not supported (this build speaks %d)"
                                  % (buf[pos + 4], FRAME_VERSION))
        payload = decode_payload(bytes(buf[pos + _HDR:pos + 4 + n]))
        self._pos = pos + 4 + n
        return payload

    def pending(self) -> int:
        """Bytes of a frame not yet complete (a truncated frame at close)."""
        return len(self._buf) - self._pos
