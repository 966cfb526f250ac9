"""Sync frames (docs/SYNC.md): a length, a version byte, one zstd frame.

    u32   n        length of what follows (little-endian), 2 <= n <= MAX_WIRE
    u8    version  FRAME_VERSION
    n-1   bytes    one zstd frame: declared content size <= MAX_DECODED,
                   window <= MAX_WINDOW, nothing after it

Every check runs before memory for the decoded payload is allocated: the
length prefix is capped before the bytes are buffered, the zstd header is
read before decompressing (no content size, a size over the cap, or a window
over the cap are refused), and the decompression itself is bounded by the
declared size (libzstd refuses to decode past it), so a header that lies
cannot make it allocate more. FrameReader decodes a frame as its bytes
arrive, so a session never holds a compressed frame whole. Each failure is a MalformedFrame subclass: the session that met it is
closed and nothing from the frame is applied.
"""
import struct

import zstandard

from ..errors import RemoteError

__all__ = [
    "FRAME_VERSION", "MAX_DECODED", "MAX_WINDOW", "MAX_WIRE", "MalformedFrame",
    "FrameTooLarge", "BadCompression", "MissingContentSize", "WindowTooLarge",
    "SizeMismatch", "BadFrameVersion", "ProtocolError", "compress", "encode_frame",
    "decode_payload",
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


def compress(payload) -> bytes:
    """One zstd frame holding payload (at most MAX_DECODED bytes), that
    decode_payload reads back."""
    if len(payload) > MAX_DECODED:
        raise ValueError("sync payload of %d bytes exceeds the %d-byte frame cap"
                         % (len(payload), MAX_DECODED))
    return _cctx.compress(payload)


def encode_frame(payload) -> bytes:
    """One frame holding payload (at most MAX_DECODED bytes)."""
    z = compress(payload)
    return _u32.pack(len(z) + 1) + bytes((FRAME_VERSION,)) + z


def _frame_params(z):
    """The zstd frame header of z, checked: a declared size within the cap,
    a window within the cap. Runs before anything is decoded."""
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
    return params


def _decode_error(e):
    msg = str(e)
    if "too small" in msg or "orruption" in msg:
        return SizeMismatch("frame does not decode to its declared size (%s)" % msg)
    return BadCompression("frame fails to decompress (%s)" % msg)


def decode_payload(z) -> bytes:
    """The decoded payload of one zstd frame, or a MalformedFrame subclass."""
    params = _frame_params(z)
    size = params.content_size
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
        raise _decode_error(e) from None
    if len(out) != size:
        raise SizeMismatch("frame decodes to %s bytes, not the %d it declares"
                           % ("more than %d" % size if len(out) > size else len(out), size))
    return bytes(out)


class FrameReader:
    """Incremental reader: feed() bytes as they come, then next() payloads.

    A frame is decoded as its bytes arrive: once the 5-byte prefix and the
    zstd frame header are in and pass the checks of decode_payload, each
    chunk goes straight into a decompressor and is dropped, so a session
    holds the decoded payload (at most its declared size, at most
    MAX_DECODED) and never the compressed frame beside it. The decompressor
    is made per frame and freed with it (no window buffer outlives a frame)."""

    _ZHEAD = 18          # the longest zstd frame header

    def __init__(self):
        self._buf = bytearray()
        self.wire_bytes = 0
        self._left = None    # compressed bytes of the current frame not yet read
        self._head = None    # its first bytes, until the zstd header can be read
        self._dobj = None
        self._out = None
        self._size = 0
        self._done = 0       # compressed bytes of the current frame already decoded

    def feed(self, data) -> None:
        self._buf += data
        self.wire_bytes += len(data)

    def next(self):
        """The decoded payload of the next whole frame, or None if it has not
        all arrived. Raises a MalformedFrame subclass for a bad frame."""
        buf = self._buf
        while True:
            if self._left is None:
                if len(buf) < _HDR:
                    if len(buf) >= 4:
                        self._check_length(_u32.unpack_from(buf, 0)[0])
                    return None
                n = self._check_length(_u32.unpack_from(buf, 0)[0])
                if buf[4] != FRAME_VERSION:
                    raise BadFrameVersion("frame version %d is not supported (this build "
                                          "speaks %d)" % (buf[4], FRAME_VERSION))
                del buf[:_HDR]
                self._left, self._head, self._done = n - 1, bytearray(), 0
            if not buf and self._left:
                return None
            k = min(self._left, len(buf))
            chunk = bytes(buf[:k])
            del buf[:k]
            self._left -= k
            self._done += k
            if self._dobj is None:
                self._head += chunk
                if len(self._head) < self._ZHEAD and self._left:
                    continue
                chunk, self._head = bytes(self._head), None
                self._start(chunk)
            self._decode(chunk)
            if self._left == 0:
                return self._finish()

    @staticmethod
    def _check_length(n):
        if n > MAX_WIRE:
            raise FrameTooLarge("frame length %d is over the %d-byte cap" % (n, MAX_WIRE))
        if n < 2:
            raise BadCompression("frame length %d is too short" % n)
        return n

    def _start(self, z):
        """Check the zstd header (as decode_payload does), make the decompressor."""
        params = _frame_params(z)
        self._size = params.content_size
        self._out = bytearray()
        self._dobj = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).decompressobj()

    def _decode(self, chunk):
        if not chunk:
            return
        d = self._dobj
        if d.eof:
            raise SizeMismatch("frame has %d bytes after its end" % len(chunk))
        try:
            self._out += d.decompress(chunk)
        except zstandard.ZstdError as e:
            raise _decode_error(e) from None
        if len(self._out) > self._size:
            raise SizeMismatch("frame decodes to more than the %d bytes it declares"
                               % self._size)
        if d.eof and d.unused_data:
            raise SizeMismatch("frame has %d bytes after its end" % len(d.unused_data))

    def _finish(self):
        d, out, size = self._dobj, self._out, self._size
        self._left = self._dobj = self._out = None
        if not d.eof or len(out) != size:
            raise SizeMismatch("frame decodes to %d bytes, not the %d it declares%s"
                               % (len(out), size, "" if d.eof else " (it is cut short)"))
        return bytes(out)

    def pending(self) -> int:
        """Bytes of a frame not yet complete (a truncated frame at close)."""
        return len(self._buf) + (self._done + _HDR if self._left is not None else 0)
