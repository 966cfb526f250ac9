"""The pure-Python CRDT engine: the oracle the wasm core must match byte for byte.

Two entry points, each one call per batch (docs/FORMAT.md, "Core batch"):

    apply(batch: bytes) -> bytes   local ops, intents resolved against the blobs
    merge(batch: bytes) -> bytes   ops from changes (no intents)

Rules are in docs/SEMANTICS.md. Within a record, every stamp at or below the
record's delete stamp D is zeroed; what is left is a pointwise maximum, so
merge is commutative, associative and idempotent. A set field also keeps a
chain per actor (its causal context), so removed elements can be forgotten.
"""
import struct

from ..codec import get_varint, put_varint, skip_value, unzigzag, U64
from ..errors import MalformedChange, CoreError

__all__ = ["apply", "merge", "decode_blob", "encode_blob", "Rec",
           "LWW", "CTR", "MV", "SET"]

BATCH_VERSION = 1
BLOB_VERSION = 2   # version 1 (no set chains) is still read
LWW, CTR, MV, SET = 1, 2, 3, 4
OP_LWW, OP_CTR, OP_MV, OP_ADD, OP_REM, OP_DEL, OP_ADDC = 1, 2, 3, 4, 5, 6, 7
OP_INC, OP_MVW, OP_ADDI, OP_RMV = 0x82, 0x83, 0x84, 0x85
_u64s = struct.Struct("<Q")


class Rec:
    """A decoded record. fields: {field_id: [kind, state]} where state is
    LWW: [hlc, actor, value_bytes] or None   CTR: {(actor, since): [p, n]}
    MV: {actor: [w, c, value_bytes_or_None]}
    SET: [chains, elems] with chains {actor: [B, T, {(s, p), ...}]} and
         elems {value_bytes: {actor: [add, rem]}} (docs/SEMANTICS.md, "Sets")
    """
    __slots__ = ("dead", "fields")

    def __init__(self):
        self.dead = 0
        self.fields = {}


def _empty(kind):
    return None if kind == LWW else [{}, {}] if kind == SET else {}


# ---------------------------------------------------------------- blobs

def _value(buf, pos):
    end = skip_value(buf, pos)
    return bytes(buf[pos:end]), end


def decode_blob(blob) -> Rec:
    """Parse a record blob. Raises MalformedChange on bad bytes."""
    r = Rec()
    if len(blob) == 0:
        return r
    version = blob[0]
    if version != BLOB_VERSION and version != 1:
        raise MalformedChange("record blob version %d is not supported" % version)
    n, p = get_varint(blob, 1)
    if p + 8 * n > len(blob):
        raise MalformedChange("blob stamp table runs past the end")
    stamps = [0] + [_u64s.unpack_from(blob, p + 8 * i)[0] for i in range(n)]
    p += 8 * n

    def ref(pos):
        i, pos = get_varint(blob, pos)
        if i > n:
            raise MalformedChange("blob stamp reference out of range")
        return stamps[i], pos

    r.dead, p = ref(p)
    nf, p = get_varint(blob, p)
    for _ in range(nf):
        fid, p = get_varint(blob, p)
        if p >= len(blob):
            raise MalformedChange("truncated blob")
        kind = blob[p]
        p += 1
        if kind == LWW:
            h, p = ref(p)
            st = None
            if h:
                a, p = get_varint(blob, p)
                v, p = _value(blob, p)
                st = [h, a, v]
        elif kind == CTR:
            st = {}
            cnt, p = get_varint(blob, p)
            for _ in range(cnt):
                a, p = get_varint(blob, p)
                s, p = ref(p)
                pp, p = get_varint(blob, p)
                nn, p = get_varint(blob, p)
                st[(a, s)] = [pp, nn]
        elif kind == MV:
            st = {}
            cnt, p = get_varint(blob, p)
            for _ in range(cnt):
                a, p = get_varint(blob, p)
                w, p = ref(p)
                c, p = ref(p)
                v = None
                if w > c:
                    v, p = _value(blob, p)
                st[a] = [w, c, v]
        elif kind == SET:
            chains = {}
            if version >= 2:
                nc, p = get_varint(blob, p)
                for _ in range(nc):
                    a, p = get_varint(blob, p)
                    b, p = ref(p)
                    t, p = ref(p)
                    nl, p = get_varint(blob, p)
                    links = set()
                    for _ in range(nl):
                        ls, p = ref(p)
                        lp, p = ref(p)
                        links.add((ls, lp))
                    chains[a] = [b, t, links]
            st = {}
            cnt, p = get_varint(blob, p)
            for _ in range(cnt):
                v, p = _value(blob, p)
                ents = {}
                ne, p = get_varint(blob, p)
                for _ in range(ne):
                    a, p = get_varint(blob, p)
                    ad, p = ref(p)
                    rm, p = ref(p)
                    ents[a] = [ad, rm]
                st[v] = ents
            st = [chains, st]
        else:
            raise MalformedChange("unknown field kind %d in blob" % kind)
        r.fields[fid] = [kind, st]
    if p != len(blob):
        raise MalformedChange("trailing bytes after record blob")
    return r


def encode_blob(r: Rec) -> bytes:
    if not r.fields and not r.dead:
        return b""
    stamps = set()
    add = stamps.add
    add(r.dead)
    for kind, st in r.fields.values():
        if kind == LWW:
            if st:
                add(st[0])
        elif kind == CTR:
            for (_, s) in st:
                add(s)
        elif kind == MV:
            for w, c, _ in st.values():
                add(w)
                add(c)
        else:
            _normal_set(st, r.dead)
            for b, t, links in st[0].values():
                add(b)
                add(t)
                for ls, lp in links:
                    add(ls)
                    add(lp)
            for ents in st[1].values():
                for ad, rm in ents.values():
                    add(ad)
                    add(rm)
    stamps.discard(0)
    table = sorted(stamps)
    refs = {0: 0}
    for i, s in enumerate(table):
        refs[s] = i + 1
    out = bytearray((BLOB_VERSION,))
    put_varint(out, len(table))
    for s in table:
        out += _u64s.pack(s)
    put_varint(out, refs[r.dead])
    put_varint(out, len(r.fields))
    for fid in sorted(r.fields):
        kind, st = r.fields[fid]
        put_varint(out, fid)
        out.append(kind)
        if kind == LWW:
            if st is None:
                out.append(0)
            else:
                put_varint(out, refs[st[0]])
                put_varint(out, st[1])
                out += st[2]
        elif kind == CTR:
            put_varint(out, len(st))
            for (a, s) in sorted(st):
                pn = st[(a, s)]
                put_varint(out, a)
                put_varint(out, refs[s])
                put_varint(out, pn[0])
                put_varint(out, pn[1])
        elif kind == MV:
            put_varint(out, len(st))
            for a in sorted(st):
                w, c, v = st[a]
                put_varint(out, a)
                put_varint(out, refs[w])
                put_varint(out, refs[c])
                if w > c:
                    out += v
        else:
            chains, elems = st
            put_varint(out, len(chains))
            for a in sorted(chains):
                b, t, links = chains[a]
                put_varint(out, a)
                put_varint(out, refs[b])
                put_varint(out, refs[t])
                put_varint(out, len(links))
                for ls, lp in sorted(links):
                    put_varint(out, refs[ls])
                    put_varint(out, refs[lp])
            put_varint(out, len(elems))
            for v in sorted(elems):
                ents = elems[v]
                out += v
                put_varint(out, len(ents))
                for a in sorted(ents):
                    put_varint(out, a)
                    put_varint(out, refs[ents[a][0]])
                    put_varint(out, refs[ents[a][1]])
    return bytes(out)


# ---------------------------------------------------------------- rules

def _normal_set(st, D):
    """The normal form of a set field (docs/SEMANTICS.md): live entries keep
    their add, dead ones their rem unless D or the actor's chain covers it."""
    chains, elems = st
    for v in list(elems):
        ents = elems[v]
        for a in list(ents):
            e = ents[a]
            if e[0] > e[1]:
                e[1] = 0
                continue
            e[0] = 0
            rm = e[1]
            ch = chains.get(a)
            if rm <= D or (ch is not None and ch[1] and ch[0] <= rm < ch[1]):
                del ents[a]
        if not ents:
            del elems[v]
    for a in [a for a, ch in chains.items() if not ch[1] and not ch[2]]:
        del chains[a]


def _link(chains, a, s, p):
    """Join the link (s, p) to actor a's chain (docs/SEMANTICS.md)."""
    ch = chains.get(a)
    if ch is None:
        ch = chains[a] = [0, 0, set()]
    if p == 0:
        ch[0] = s if not ch[0] else min(ch[0], s)
        ch[1] = max(ch[1], s)
    elif ch[1] and p <= ch[1]:
        ch[1] = max(ch[1], s)
    else:
        ch[2].add((s, p))
        return
    links = ch[2]
    while links:
        ready = [l for l in links if l[1] <= ch[1]]
        if not ready:
            break
        for l in ready:
            links.discard(l)
            ch[1] = max(ch[1], l[0])


def _prev(f, a, h) -> int:
    """The prev of a local add by a stamped h: the greatest stamp in a's
    chain for that field (T and the waiting links), 0 if none. A local add
    must be stamped above it (a node's stamps rise), else the chain breaks."""
    if f is None or f[0] != SET:
        return 0
    ch = f[1][0].get(a)
    if ch is None:
        return 0
    best = ch[1]
    for ls, _ in ch[2]:
        if ls > best:
            best = ls
    if best >= h:
        raise MalformedChange("a local add must be stamped above the actor's earlier adds")
    return best

def _field(r: Rec, fid: int, kind: int):
    """Return the field's state if the op's kind may act on it, else None.
    A higher kind replaces a lower one; a lower kind's op is ignored."""
    f = r.fields.get(fid)
    if f is None or f[0] < kind:
        f = r.fields[fid] = [kind, _empty(kind)]
    elif f[0] > kind:
        return None
    return f


def _delete(r: Rec, h: int) -> None:
    if h <= r.dead:
        return
    r.dead = D = h
    for f in r.fields.values():
        kind, st = f
        if kind == LWW:
            if st is not None and st[0] <= D:
                f[1] = None
        elif kind == CTR:
            for k in [k for k in st if k[1] < D]:
                del st[k]
        elif kind == MV:
            for a in list(st):
                e = st[a]
                if e[0] <= D:
                    e[0] = 0
                    e[2] = None
                if e[1] <= D:
                    e[1] = 0
                if not e[0] and not e[1]:
                    del st[a]
        else:
            elems = st[1]
            for v in list(elems):
                ents = elems[v]
                for a in list(ents):
                    e = ents[a]
                    if e[0] <= D:
                        e[0] = 0
                    if e[1] <= D:
                        e[1] = 0
                    if not e[0] and not e[1]:
                        del ents[a]
                if not ents:
                    del elems[v]


def _lww(r, fid, h, a, v, ids):
    f = _field(r, fid, LWW)
    if f is None or h <= r.dead:
        return
    cur = f[1]
    if cur is not None and cur[1] >= len(ids):
        raise MalformedChange("blob names an actor outside the actor table")
    if cur is None or (h, ids[a], v) > (cur[0], ids[cur[1]], cur[2]):
        f[1] = [h, a, v]


def _ctr(r, fid, a, s, p, n):
    f = _field(r, fid, CTR)
    if f is None or s < r.dead:
        return
    e = f[1].get((a, s))
    if e is None:
        f[1][(a, s)] = [p, n]
    else:
        e[0] = max(e[0], p)
        e[1] = max(e[1], n)


def _mv(r, fid, h, a, v, ctx):
    f = _field(r, fid, MV)
    if f is None:
        return
    st = f[1]
    D = r.dead
    if h > D:
        e = st.get(a)
        if e is None:
            st[a] = [h, 0, v]
        elif (h, v) > (e[0], e[2] or b""):
            e[0] = h
            e[2] = v
    for ca, ch in ctx:
        if ch <= D:
            continue
        e = st.get(ca)
        if e is None:
            st[ca] = [0, ch, None]
        elif ch > e[1]:
            e[1] = ch
    for e in st.values():
        if e[0] <= e[1]:
            e[2] = None


def _add(r, fid, h, a, v):
    """op 4, as 0.2 wrote it: no chain."""
    f = _field(r, fid, SET)
    if f is None or h <= r.dead:
        return
    ents = f[1][1].setdefault(v, {})
    e = ents.get(a)
    if e is None:
        ents[a] = [h, 0]
    elif h > e[0]:
        e[0] = h


def _add_chained(r, fid, h, a, prev, v):
    """op 7: an add that carries the stamp of its actor's previous add."""
    if prev >= h:
        raise MalformedChange("set add: prev must be below the stamp")
    f = _field(r, fid, SET)
    if f is None:
        return
    chains, elems = f[1]
    ch = chains.get(a)
    covered = ch is not None and ch[1] and ch[0] <= h < ch[1]
    _link(chains, a, h, prev)
    if covered or h <= r.dead:
        return
    ents = elems.setdefault(v, {})
    e = ents.get(a)
    if e is None:
        ents[a] = [h, 0]
    elif h > e[0]:
        e[0] = h


def _rem(r, fid, v, ctx):
    f = _field(r, fid, SET)
    if f is None:
        return
    D = r.dead
    for ca, ch in ctx:
        if ch <= D:
            continue
        ents = f[1][1].setdefault(v, {})
        e = ents.get(ca)
        if e is None:
            ents[ca] = [0, ch]
        elif ch > e[1]:
            e[1] = ch


# ---------------------------------------------------------------- batches

class _Batch:
    __slots__ = ("ids", "fmap", "amap", "recs", "buf", "pos", "nops")


def _read_ids(data, p):
    """The store's actor table (u64 ids) at p."""
    n, p = get_varint(data, p)
    if p + 8 * n > len(data):
        raise MalformedChange("actor table runs past the end")
    return [_u64s.unpack_from(data, p + 8 * i)[0] for i in range(n)], p + 8 * n


def _read_recs(data, p):
    """The decoded record blobs at p."""
    n, p = get_varint(data, p)
    recs = []
    for _ in range(n):
        ln, p = get_varint(data, p)
        if p + ln > len(data):
            raise MalformedChange("record blob runs past the end")
        recs.append(decode_blob(data[p:p + ln]))
        p += ln
    return recs, p


def _put_result(out, max_h, recs):
    """The part every result starts with: max stamp, then the blobs."""
    put_varint(out, max_h)
    put_varint(out, len(recs))
    for r in recs:
        blob = encode_blob(r)
        put_varint(out, len(blob))
        out += blob


def _read_batch(data) -> _Batch:
    b = _Batch()
    if not data or data[0] != BATCH_VERSION:
        raise MalformedChange("batch version is not supported")
    b.ids, p = _read_ids(data, 1)
    b.fmap, p = _list(data, p)
    n, p = get_varint(data, p)
    b.amap = []
    for _ in range(n):
        x, p = get_varint(data, p)
        if x >= len(b.ids):
            raise MalformedChange("actor map points outside the actor table")
        b.amap.append(x)
    b.recs, p = _read_recs(data, p)
    b.nops, p = get_varint(data, p)
    b.buf = data
    b.pos = p
    return b


def _ops(buf, p, nops, recs, kmap, fmap, amap, ids, local, out_ops):
    """Run the ops of one change; returns the greatest stamp seen. Key
    indexes go through kmap when given (batch v2), else straight to recs."""
    inv = {loc: i for i, loc in enumerate(amap)}
    nkeys = len(kmap) if kmap is not None else len(recs)
    max_h = 0
    prevs = {}

    def var():
        nonlocal p
        x, p = get_varint(buf, p)
        return x

    def fld():
        x = var()
        if x >= len(fmap):
            raise MalformedChange("field index out of range")
        return fmap[x]

    def act():
        x = var()
        if x >= len(amap):
            raise MalformedChange("actor index out of range")
        return amap[x]

    def stamp():
        nonlocal max_h
        x = var()
        if x == 0:
            raise MalformedChange("zero stamp")
        if x > max_h:
            max_h = x
        return x

    def val():
        nonlocal p
        v, p = _value(buf, p)
        return v

    def ctx_list():
        n = var()
        if n > len(buf):
            raise MalformedChange("context count runs past the end")
        return [(act(), stamp()) for _ in range(n)]

    def intent():
        """field, stamp, actor, value of a local intent (0x83, 0x84)."""
        fi = var()
        if fi >= len(fmap):
            raise MalformedChange("field index out of range")
        h = stamp(); ai = var()
        if ai >= len(amap):
            raise MalformedChange("actor index out of range")
        return fi, fmap[fi], h, ai, amap[ai], val()

    def emit_ctx(ctx):
        put_varint(out_ops, len(ctx))
        for a, h in ctx:
            i = inv.get(a)
            if i is None:
                i = inv[a] = len(amap)
                amap.append(a)
            put_varint(out_ops, i)
            put_varint(out_ops, h)

    for _ in range(nops):
        start = p
        k = var()
        if k >= nkeys:
            raise MalformedChange("key index out of range")
        if p >= len(buf):
            raise MalformedChange("truncated op")
        code = buf[p]
        p += 1
        r = recs[kmap[k] if kmap is not None else k]
        if code == OP_LWW:
            fid = fld(); h = stamp(); a = act(); v = val()
            _lww(r, fid, h, a, v, ids)
        elif code == OP_CTR:
            fid = fld(); a = act(); s = var(); pp = var(); nn = var()
            _ctr(r, fid, a, s, pp, nn)
        elif code == OP_MV:
            fid = fld(); h = stamp(); a = act(); v = val(); ctx = ctx_list()
            _mv(r, fid, h, a, v, ctx)
        elif code == OP_ADD:
            fid = fld(); h = stamp(); a = act(); v = val()
            _add(r, fid, h, a, v)
        elif code == OP_ADDC:
            fid = fld(); h = stamp(); a = act(); bk = var(); v = val()
            # on the wire: back = stamp - prev, 0 for none; back >= stamp is refused
            _add_chained(r, fid, h, a, 0 if bk == 0 else h - bk if bk < h else h, v)
        elif code == OP_REM:
            fid = fld(); v = val(); ctx = ctx_list()
            _rem(r, fid, v, ctx)
        elif code == OP_DEL:
            _delete(r, stamp())
        elif local and code == OP_INC:
            fi = var()
            if fi >= len(fmap):
                raise MalformedChange("field index out of range")
            fid = fmap[fi]; ai = var()
            if ai >= len(amap):
                raise MalformedChange("actor index out of range")
            a = amap[ai]; d = unzigzag(var())
            f = r.fields.get(fid)
            pn = [0, 0]
            if f is not None and f[0] == CTR:
                pn = list(f[1].get((a, r.dead), pn))
            if d >= 0:
                pn[0] += d
            else:
                pn[1] -= d
            if pn[0] > U64 or pn[1] > U64:
                raise CoreError("counter overflow")
            _ctr(r, fid, a, r.dead, pn[0], pn[1])
            put_varint(out_ops, k); out_ops.append(OP_CTR)
            put_varint(out_ops, fi); put_varint(out_ops, ai)
            put_varint(out_ops, r.dead); put_varint(out_ops, pn[0]); put_varint(out_ops, pn[1])
            continue
        elif local and code == OP_MVW:
            fi, fid, h, ai, a, v = intent()
            f = r.fields.get(fid)
            ctx = []
            if f is not None and f[0] == MV:
                ctx = [(ea, e[0]) for ea, e in sorted(f[1].items()) if e[0] > e[1]]
            _mv(r, fid, h, a, v, ctx)
            put_varint(out_ops, k); out_ops.append(OP_MV)
            put_varint(out_ops, fi); put_varint(out_ops, h); put_varint(out_ops, ai)
            out_ops += v
            emit_ctx(ctx)
            continue
        elif local and code == OP_ADDI:
            fi, fid, h, ai, a, v = intent()
            pk = (id(r), fid, a, h)   # adds of one change to one field share prev
            pv = prevs.get(pk)
            if pv is None:
                pv = prevs[pk] = _prev(r.fields.get(fid), a, h)
            _add_chained(r, fid, h, a, pv, v)
            put_varint(out_ops, k); out_ops.append(OP_ADDC)
            put_varint(out_ops, fi); put_varint(out_ops, h); put_varint(out_ops, ai)
            put_varint(out_ops, h - pv if pv else 0)
            out_ops += v
            continue
        elif local and code == OP_RMV:
            fi = var()
            if fi >= len(fmap):
                raise MalformedChange("field index out of range")
            fid = fmap[fi]; v = val()
            f = r.fields.get(fid)
            ctx = []
            if f is not None and f[0] == SET and v in f[1][1]:
                ctx = [(ea, e[0]) for ea, e in sorted(f[1][1][v].items()) if e[0] > e[1]]
            _rem(r, fid, v, ctx)
            put_varint(out_ops, k); out_ops.append(OP_REM)
            put_varint(out_ops, fi); out_ops += v
            emit_ctx(ctx)
            continue
        else:
            raise MalformedChange("unknown op code %d" % code)
        if local:
            out_ops += buf[start:p]
    if p != len(buf):
        raise MalformedChange("trailing bytes after the last op")
    return max_h


def _run(data, local: bool):
    if not local and data and data[0] == 2:
        return _run_v2(data)
    b = _read_batch(data)
    out_ops = bytearray()
    amap = b.amap
    recs = b.recs
    max_h = _ops(b.buf, b.pos, b.nops, recs, None, b.fmap, amap, b.ids, local, out_ops)
    out = bytearray()
    _put_result(out, max_h, recs)
    if local:
        put_varint(out, len(amap))
        for a in amap:
            put_varint(out, a)
        put_varint(out, b.nops)
        out += out_ops
    return bytes(out)


def _list(data, p):
    n, p = get_varint(data, p)
    out = []
    for _ in range(n):
        x, p = get_varint(data, p)
        out.append(x)
    return out, p


def _run_v2(data):
    """Batch version 2: many changes' ops over shared records, one call."""
    ids, p = _read_ids(data, 1)
    recs, p = _read_recs(data, p)
    nsec, p = get_varint(data, p)
    max_h = 0
    for _ in range(nsec):
        fmap, p = _list(data, p)
        amap, p = _list(data, p)
        if any(x >= len(ids) for x in amap):
            raise MalformedChange("actor map points outside the actor table")
        kmap, p = _list(data, p)
        if any(x >= len(recs) for x in kmap):
            raise MalformedChange("key map points outside the records")
        nops, p = get_varint(data, p)
        olen, p = get_varint(data, p)
        if p + olen > len(data):
            raise MalformedChange("section runs past the end")
        h = _ops(bytes(data[p:p + olen]), 0, nops, recs, kmap, fmap, amap, ids, False, None)
        max_h = max(max_h, h)
        p += olen
    if p != len(data):
        raise MalformedChange("trailing bytes after the last section")
    out = bytearray()
    _put_result(out, max_h, recs)
    return bytes(out)


def apply(batch) -> bytes:
    """Apply local ops (intents allowed); returns blobs, actor map, resolved ops."""
    return _run(batch, True)


def merge(batch) -> bytes:
    """Merge ops from changes; returns max stamp and the new blobs."""
    return _run(batch, False)
