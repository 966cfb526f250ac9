"""Every class of malformed frame is a typed error that closes that session
only; nothing from it is applied and an honest session still syncs."""
import os
import struct

import pytest
import zstandard

from agent.sync import frame as F
from agent.values import Inc

from .helpers import make_node, pair, run, state
from agent.sync.transport import settle

_u32 = struct.Struct("<I")


def wrap(z, version=F.FRAME_VERSION):
    return _u32.pack(len(z) + 1) + bytes((version,)) + z


def lying_size(payload=b"\x04" + b"x" * 5000, declared=4000):
    z = bytearray(zstandard.ZstdCompressor(level=3).compress(payload))
    assert z[4] & 0xC0 == 0x40 and z[4] & 0x20   # single segment, 2-byte size field
    z[5:7] = struct.pack("<H", declared - 256)
    return bytes(z)


def no_size():
    c = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    return c.compress(b"\x04\x00") + c.flush()


def big_window():
    p = zstandard.ZstdCompressionParameters.from_level(1, window_log=24)
    return zstandard.ZstdCompressor(compression_params=p).compress(b"\0" * (12 << 20))


def over_cap():
    return zstandard.ZstdCompressor(level=1).compress(b"\0" * (F.MAX_DECODED + 1))


def frames():
    """(name, bytes to send, error class, close_after) for each malformed class."""
    good = F.encode_frame(b"\x04\x00")
    return [
        ("bad zstd", wrap(b"\x28\xb5\x2f\xfd" + os.urandom(40)), F.MalformedFrame, False),
        ("not zstd", wrap(b"hello, this is not zstd"), F.BadCompression, False),
        ("over-cap declared size", wrap(over_cap()), F.FrameTooLarge, False),
        ("missing content size", wrap(no_size()), F.MissingContentSize, False),
        ("lying size (smaller)", wrap(lying_size(declared=4000)), F.SizeMismatch, False),
        ("lying size (larger)", wrap(lying_size(declared=9000)), F.SizeMismatch, False),
        ("trailing frame", wrap(F.encode_frame(b"\x04\x00")[5:] * 2), F.SizeMismatch, False),
        ("window too big", wrap(big_window()), F.WindowTooLarge, False),
        ("length over cap", _u32.pack(0xFFFFFFF0) + b"\x01", F.FrameTooLarge, False),
        ("truncated", good[:-3], F.SizeMismatch, True),
        ("truncated zstd", wrap(F.encode_frame(b"\x04" * 3000)[5:-6]), F.MalformedFrame, False),
        ("wrong version", wrap(good[5:], version=9), F.BadFrameVersion, False),
        ("unknown message type", F.encode_frame(b"\x63abc"), F.ProtocolError, False),
        ("empty message", wrap(zstandard.ZstdCompressor().compress(b"")), F.ProtocolError, False),
        ("truncated message", F.encode_frame(b"\x02\x01\x05\x80"), F.ProtocolError, False),
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(64), F.MalformedFrame, False),
    ]


CASES = frames()


@pytest.mark.parametrize("name,data,err,close_after", CASES, ids=[c[0] for c in CASES])
def test_malformed_frame_closes_only_that_session(tmp_path, name, data, err, close_after):
    a, b = make_node(tmp_path / "a"), make_node(tmp_path / "b")
    for i in range(30):
        a.put("k%d" % i, {"n": Inc(1)})
    evil = make_node(tmp_path / "evil")
    evil.put("evil", {"x": 1})
    # the evil peer says a genuine HELLO, then the bad frame
    se, sb = pair(evil, b)
    settle(sb, se.data_to_send())
    before = (state(b), dict(b.vv), b.log.size())
    settle(sb, data)
    if close_after:
        sb.eof()
    assert sb.closed and isinstance(sb.error, err), (name, sb.error)
    assert (state(b), dict(b.vv), b.log.size()) == before
    # an honest peer still syncs with b
    sa, sb2 = pair(a, b)
    run(sa, sb2)
    assert sa.caught_up and sb2.caught_up and state(a) == state(b)


def test_decoder_refuses_before_allocating():
    """An over-cap or lying frame is refused by its header alone or within
    the declared size: the decoder never produces more than it declares."""
    with pytest.raises(F.FrameTooLarge):
        F.decode_payload(over_cap())
    with pytest.raises(F.WindowTooLarge):
        F.decode_payload(big_window())
    assert F.decode_payload(F.encode_frame(b"abc" * 1000)[5:]) == b"abc" * 1000


def test_frames_from_a_pair_are_within_caps(tmp_path):
    a, b = make_node(tmp_path / "a"), make_node(tmp_path / "b")
    for i in range(200):
        a.put("k%d" % i, {"text": "x" * 500})
    sa, sb = pair(a, b)
    settle(sa, sb.data_to_send())
    settle(sb, sa.data_to_send())
    sa.pump()
    data = sa.data_to_send()
    z = data[5:]
    p = zstandard.get_frame_parameters(z)
    assert p.content_size <= F.MAX_DECODED and p.window_size <= F.MAX_WINDOW


def test_a_frame_is_decoded_as_its_bytes_arrive():
    """The reader feeds each chunk to the decompressor and drops it, so it
    never holds the compressed frame beside the payload: with an
    incompressible 8 MiB payload, the peak Python allocation while reading
    is the payload and its one copy (the old reader also kept the frame and
    a copy of it: about four times the payload)."""
    import tracemalloc
    payload = b"\x04" + os.urandom(8 << 20)
    data = F.encode_frame(payload)
    r = F.FrameReader()
    got = []
    tracemalloc.start()
    try:
        for i in range(0, len(data), 1 << 16):
            r.feed(data[i:i + (1 << 16)])
            p = r.next()
            if p is not None:
                got.append(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [payload] and r.pending() == 0
    assert peak < 2.5 * len(payload), peak / len(payload)
