"""Host side of the core batch (docs/FORMAT.md, "Core batch"): build the
input of one apply/merge call and read its result. Shared by both engines."""
from ..codec import get_varint, varint

BATCH_VERSION = 1


def build_batch(actor_table: bytes, fmap, amap, blobs, nops: int, ops) -> bytes:
    """actor_table: the store's actor ids already packed as u64 LE."""
    return build_batch_raw(actor_table, index_map(fmap), index_map(amap), blobs, nops, ops)


def index_map(m) -> bytes:
    """Encode a field or actor map once; the write path caches it."""
    return varint(len(m)) + b"".join([varint(x) for x in m])


def build_batch_raw(actor_table: bytes, fmap_enc: bytes, amap_enc: bytes, blobs, nops, ops):
    parts = [b"\x01", varint(len(actor_table) // 8), actor_table, fmap_enc, amap_enc,
             varint(len(blobs))]
    for b in blobs:
        parts.append(varint(len(b)))
        parts.append(b)
    parts.append(varint(nops))
    parts.append(ops)
    return b"".join(parts)


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


def build_multi(actor_table: bytes, blobs, sections) -> bytes:
    """Batch version 2 (merge only): several changes in one engine call.
    sections: (fmap, amap, kmap, nops, ops) per change, where kmap maps the
    change's key indexes to positions in blobs; a map may be given already
    encoded by index_map (bytes)."""
    parts = [b"\x02", varint(len(actor_table) // 8), actor_table, varint(len(blobs))]
    for b in blobs:
        parts.append(varint(len(b)))
        parts.append(b)
    parts.append(varint(len(sections)))
    for fmap, amap, kmap, nops, ops in sections:
        parts += (fmap if type(fmap) is bytes else index_map(fmap),
                  amap if type(amap) is bytes else index_map(amap),
                  kmap if type(kmap) is bytes else index_map(kmap),
                  varint(nops), varint(len(ops)), ops)
    return b"".join(parts)
