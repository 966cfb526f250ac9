"""What a write can say about a field, and how a stored record reads back.

    node.put("user:1", {"name": "Ada",            # lww register
                        "visits": Inc(1),          # counter (Inc(-2) decrements)
                        "colour": MV("red"),       # multi-value register
                        "tags": Add("a", "b"),     # add-wins set
                        "old": Remove("x")})
"""
from .codec import decode_value, get_varint
from .core.reference import LWW, CTR, MV as MV_KIND, SET

__all__ = ["Inc", "MV", "Add", "Remove", "KIND_NAMES", "KIND_API", "decode_record"]

KIND_NAMES = {LWW: "lww", CTR: "counter", MV_KIND: "mv", SET: "set"}
KIND_API = {"lww": "a plain value", "counter": "Inc(n)", "mv": "MV(value)",
            "set": "Add(x) or Remove(x)"}


class Inc:
    __slots__ = ("delta",)

    def __init__(self, delta: int = 1):
        if type(delta) is not int:
            from .errors import InvalidArgument
            raise InvalidArgument("Inc takes an integer, not %s" % type(delta).__name__)
        self.delta = delta

    def __repr__(self):
        return "Inc(%d)" % self.delta


class MV:
    __slots__ = ("value",)

    def __init__(self, value: object):
        self.value = value

    def __repr__(self):
        return "MV(%r)" % (self.value,)


class Add:
    __slots__ = ("values",)

    def __init__(self, *values: object):
        self.values = values

    def __repr__(self):
        return "Add%r" % (self.values,)


class Remove:
    __slots__ = ("values",)

    def __init__(self, *values: object):
        self.values = values

    def __repr__(self):
        return "Remove%r" % (self.values,)


def decode_record(blob, field_names, with_kinds=False):
    """Read a record blob (docs/FORMAT.md) into {field: value}; None if the
    record is deleted or empty. Pure Python, no engine call. Varints are read
    inline when they fit one byte (nearly always): this is the read path."""
    if not blob:
        return None
    gv = get_varint
    n = blob[1]
    p = 2 if n < 0x80 else gv(blob, 1)[1]
    if n >= 0x80:
        n = gv(blob, 1)[0]
    p += 8 * n
    p = p + 1 if blob[p] < 0x80 else gv(blob, p)[1]   # delete stamp
    nf = blob[p]
    if nf < 0x80:
        p += 1
    else:
        nf, p = gv(blob, p)
    out = {}
    kinds = {}
    for _ in range(nf):
        fid = blob[p]
        if fid < 0x80:
            p += 1
        else:
            fid, p = gv(blob, p)
        kind = blob[p]
        ref = blob[p + 1]
        p += 2
        name = field_names[fid]
        if kind == LWW:
            if ref >= 0x80:
                ref, p = gv(blob, p - 1)
            if ref:
                p = p + 1 if blob[p] < 0x80 else gv(blob, p)[1]   # actor
                out[name], p = decode_value(blob, p)
                kinds[name] = "lww"
            continue
        p -= 1
        if kind == CTR:
            cnt, p = gv(blob, p)
            total = 0
            for _ in range(cnt):
                _, p = gv(blob, p)
                _, p = gv(blob, p)
                pp, p = gv(blob, p)
                nn, p = gv(blob, p)
                total += pp - nn
            if cnt:
                out[name] = total
                kinds[name] = "counter"
        elif kind == MV_KIND:
            cnt, p = gv(blob, p)
            vals = []
            for _ in range(cnt):
                _, p = gv(blob, p)
                w, p = gv(blob, p)
                c, p = gv(blob, p)
                if w > c:  # refs are ordered like the stamps they point to
                    start = p
                    v, p = decode_value(blob, p)
                    vals.append((bytes(blob[start:p]), v))
            if vals:
                vals.sort(key=lambda t: t[0])
                out[name] = [v for _, v in vals]
                kinds[name] = "mv"
        else:
            if blob[0] >= 2:   # version 2: the set's chains come first
                nc, p = gv(blob, p)
                for _ in range(nc):
                    for _ in range(3):
                        p = p + 1 if blob[p] < 0x80 else gv(blob, p)[1]
                    nl, p = gv(blob, p)
                    for _ in range(2 * nl):
                        p = p + 1 if blob[p] < 0x80 else gv(blob, p)[1]
            cnt, p = gv(blob, p)
            elems = []
            for _ in range(cnt):
                v, p = decode_value(blob, p)
                m, p = gv(blob, p)
                live = False
                for _ in range(m):
                    _, p = gv(blob, p)
                    ad, p = gv(blob, p)
                    rm, p = gv(blob, p)
                    if ad > rm:
                        live = True
                if live:
                    elems.append(v)
            if elems:
                out[name] = elems
                kinds[name] = "set"
    if not out:
        return None
    return (out, kinds) if with_kinds else out


def is_visible(blob) -> bool:
    """True if the record has any live field: decode_record(...) is not None,
    but stops at the first live field and decodes no values."""
    if not blob:
        return False
    n, p = get_varint(blob, 1)
    p += 8 * n
    _, p = get_varint(blob, p)
    nf, p = get_varint(blob, p)
    for _ in range(nf):
        _, p = get_varint(blob, p)
        kind = blob[p]
        p += 1
        if kind == LWW:
            ref, p = get_varint(blob, p)
            if ref:
                return True
        elif kind == CTR:
            cnt, p = get_varint(blob, p)
            if cnt:
                return True
        else:
            # mv and set need a walk over values; rare enough to decode fully
            return decode_record(blob, _AnyName()) is not None
    return False


class _AnyName:
    def __getitem__(self, i):
        return i
