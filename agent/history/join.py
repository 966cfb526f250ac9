"""The state join: a record blob from another store merged into ours
(docs/SEMANTICS.md, "Joining two states").

    join_blob(ours, theirs, fmap, amap, ids) -> bytes

`theirs` is in the other store's ids: fmap[their field id] is our field id,
amap[their actor index] our actor index; ids[our actor index] is the 64-bit
actor id (the lww tie-break). The result, in our ids, is the state that
merging every op behind both states would give: each kind's state is a
join of pointwise maxima, and a set's elements follow the dot-store rule
(an entry one side lacks although its chain covers the entry's stamp was
seen and removed there, so it goes). Bytes that do not decode, or an id
out of range, raise MalformedChange and nothing else.
"""
import struct

from ..errors import MalformedChange
from ..core import reference as R

__all__ = ["join_blob", "join_rec", "remap"]


def remap(r: R.Rec, fmap, amap) -> R.Rec:
    """r with its field ids and actor indexes translated."""
    out = R.Rec()
    out.dead = r.dead
    try:
        for fid, (kind, st) in r.fields.items():
            if kind == R.LWW:
                st = None if st is None else [st[0], amap[st[1]], st[2]]
            elif kind == R.CTR:
                st = {(amap[a], s): list(pn) for (a, s), pn in st.items()}
            elif kind == R.MV:
                st = {amap[a]: list(e) for a, e in st.items()}
            else:
                chains, elems = st
                st = [{amap[a]: [b, t, set(links)] for a, (b, t, links) in chains.items()},
                      {v: {amap[a]: list(e) for a, e in ents.items()} for v, ents in elems.items()}]
            f = fmap[fid]
            if f in out.fields:
                raise MalformedChange("two fields of a snapshot record map to one name")
            out.fields[f] = [kind, st]
    except (IndexError, KeyError, TypeError):
        raise MalformedChange("a snapshot record names a field or actor outside its "
                              "tables") from None
    return out


def _copy(kind, st):
    if kind == R.LWW:
        return None if st is None else list(st)
    if kind == R.CTR:
        return {k: list(v) for k, v in st.items()}
    if kind == R.MV:
        return {a: list(e) for a, e in st.items()}
    chains, elems = st
    return [{a: [b, t, set(ls)] for a, (b, t, ls) in chains.items()},
            {v: {a: list(e) for a, e in ents.items()} for v, ents in elems.items()}]


def _covered(chains, a, s):
    ch = chains.get(a)
    return ch is not None and bool(ch[1]) and ch[0] <= s < ch[1]


def _join_set(x, y):
    (cx, ex), (cy, ey) = x, y
    chains = _copy(R.SET, [cx, {}])[0]
    for a, (b, t, links) in cy.items():
        if b:
            R._link(chains, a, b, 0)
        if t and t != b:
            R._link(chains, a, t, b)
        for s, p in links:
            R._link(chains, a, s, p)
    elems = {}
    for v in set(ex) | set(ey):
        ax, ay = ex.get(v, {}), ey.get(v, {})
        ents = {}
        for a in set(ax) | set(ay):
            e1, e2 = ax.get(a), ay.get(a)
            if e1 is not None and e2 is not None:
                ents[a] = [max(e1[0], e2[0]), max(e1[1], e2[1])]
                continue
            e, other = (e1, cy) if e1 is not None else (e2, cx)
            s = e[0] if e[0] > e[1] else e[1]
            if not _covered(other, a, s):   # the other side saw it, and removed it
                ents[a] = list(e)
        if ents:
            elems[v] = ents
    return [chains, elems]


def _join_field(kind, x, y, ids):
    if kind == R.LWW:
        if x is None or y is None:
            return _copy(kind, x if y is None else y)
        return list(max(x, y, key=lambda e: (e[0], ids[e[1]], e[2])))
    if kind == R.CTR:
        out = _copy(kind, x)
        for k, (p, n) in y.items():
            e = out.get(k)
            out[k] = [p, n] if e is None else [max(e[0], p), max(e[1], n)]
        return out
    if kind == R.MV:
        out = _copy(kind, x)
        for a, (w, c, v) in y.items():
            e = out.get(a)
            if e is None:
                out[a] = [w, c, v]
                continue
            if (w, v or b"") > (e[0], e[2] or b""):
                e[0], e[2] = w, v
            e[1] = max(e[1], c)
        for e in out.values():
            if e[0] <= e[1]:
                e[2] = None
        return out
    return _join_set(x, y)


def join_rec(a: R.Rec, b: R.Rec, ids) -> R.Rec:
    """The join of two records in one store's ids."""
    r = R.Rec()
    for fid in set(a.fields) | set(b.fields):
        fa, fb = a.fields.get(fid), b.fields.get(fid)
        if fa is None or fb is None or fa[0] != fb[0]:
            k, st = max((f for f in (fa, fb) if f is not None), key=lambda f: f[0])
            r.fields[fid] = [k, _copy(k, st)]
        else:
            r.fields[fid] = [fa[0], _join_field(fa[0], fa[1], fb[1], ids)]
    D = max(a.dead, b.dead)
    if D:
        R._delete(r, D)
    return r


def join_blob(ours: bytes, theirs: bytes, fmap, amap, ids) -> bytes:
    if not theirs:
        return ours
    try:
        t = R.decode_blob(theirs)
    except (IndexError, ValueError, struct.error, UnicodeDecodeError):
        raise MalformedChange("a snapshot record does not decode") from None
    t = remap(t, fmap, amap)
    o = R.decode_blob(ours) if ours else R.Rec()
    try:
        return R.encode_blob(join_rec(o, t, ids))
    except (IndexError, KeyError, TypeError):
        raise MalformedChange("a snapshot record names an actor outside the table") from None
