"""Host side of the core batch (docs/FORMAT.md, "Core batch"): build the
input of one apply/merge call and read its result. Shared by both engines."""
from ..codec import get_varint, put_varint

BATCH_VERSION = 1


def build_batch(actor_table: bytes, fmap, amap, blobs, nops: int, ops) -> bytes:
    """actor_table: the store's actor ids already packed as u64 LE."""
    out = bytearray((BATCH_VERSION,))
    put_varint(out, len(actor_table) // 8)
    out += actor_table
    for m in (fmap, amap):
        put_varint(out, len(m))
        for x in m:
            put_varint(out, x)
    put_varint(out, len(blobs))
    for b in blobs:
        put_varint(out, len(b))
        out += b
    put_varint(out, nops)
    out += ops
    return bytes(out)


def _blobs(out, p):
    n, p = get_varint(out, p)
    blobs = []
    for _ in range(n):
        ln, p = get_varint(out, p)
        blobs.append(bytes(out[p:p + ln]))
        p += ln
    return blobs, p


def parse_merge_result(out):
    """-> (max_stamp, blobs)"""
    max_h, p = get_varint(out, 0)
    blobs, p = _blobs(out, p)
    return max_h, blobs


def parse_apply_result(out):
    """-> (max_stamp, blobs, actor_map, nops, ops)"""
    max_h, p = get_varint(out, 0)
    blobs, p = _blobs(out, p)
    n, p = get_varint(out, p)
    amap = []
    for _ in range(n):
        x, p = get_varint(out, p)
        amap.append(x)
    nops, p = get_varint(out, p)
    return max_h, blobs, amap, nops, bytes(out[p:])
