"""A batch of changes on the wire, as a CHANGES message carries it and as a
relay message does (docs/SYNC.md, "CHANGES"; docs/RELAY.md): the changes,
each without its hash (the receiver recomputes it) and, where the change
just before it in the batch is its predecessor, without its prev_hash too;
then the signed heads that vouch for them.

Decoding never trusts a length or a flag: anything that does not frame is a
ProtocolError and the caller applies nothing of the batch.
"""
from ..change import HASH_LEN, _blake, change_head, chain_head, parse_change
from ..codec import get_varint, put_varint
from ..errors import MalformedChange
from .frame import ProtocolError

__all__ = ["encode_changes", "decode_changes", "heads_for"]


def encode_changes(out: bytearray, items) -> int:
    """Append the count and the changes of items, each (raw, actor, seq,
    prev, prev_hash, offset of prev_hash) as chain_head reads it; returns
    the raw bytes written."""
    put_varint(out, len(items))
    raw_bytes = 0
    last = {}    # actor -> (seq, hash) of its change written just before
    for raw, actor, seq, prev, ph, off in items:
        n = len(raw) - HASH_LEN
        lp = last.get(actor)
        if ph is not None and lp is not None and lp[0] == prev and lp[1] == ph:
            put_varint(out, (n - HASH_LEN) << 1 | 1)
            out += memoryview(raw)[:off]
            out += memoryview(raw)[off + HASH_LEN:n]
        else:
            put_varint(out, n << 1)
            out += memoryview(raw)[:n]
        last[actor] = (seq, raw[-HASH_LEN:])
        raw_bytes += n
    return raw_bytes


def decode_changes(m, p, what="CHANGES"):
    """Read what encode_changes wrote at m[p:]; returns (parsed, odd, size,
    p): the changes that parse, those that do not ((head, raw, reason)
    each: a later format, or damage the hash does not reveal) and their raw
    bytes. A change whose very header cannot be read is a ProtocolError."""
    n, p = get_varint(m, p)
    if n > len(m):
        raise ProtocolError("%s count %d runs past the message" % (what, n))
    parsed, odd = [], []
    size = 0
    last = {}    # actor -> (seq, hash) of its change just before in this batch
    for _ in range(n):
        ln, p = get_varint(m, p)
        ln, cut = ln >> 1, ln & 1
        if p + ln > len(m):
            raise ProtocolError("a change runs past the %s message" % what)
        body = m[p:p + ln]
        p += ln
        if cut:   # its prev_hash is the hash of the change before it here
            try:
                actor, seq, prev, ph, off = chain_head(body)
            except MalformedChange as e:
                raise ProtocolError("a change in a %s message is not a change (%s)"
                                    % (what, e)) from None
            if ph is None:
                raise ProtocolError("a change in a %s message without its prev_hash is "
                                    "not of version 3" % what)
            lp = last.get(actor)
            if lp is None or lp[0] != prev:
                raise ProtocolError("a change in a %s message leaves out the hash of a "
                                    "change that is not before it in the batch" % what)
            body = body[:off] + lp[1] + body[off:]
        size += len(body)
        h = _blake(body, digest_size=HASH_LEN).digest()
        raw = body + h
        try:
            c = parse_change(raw, check_hash=False)  # h was just computed
            parsed.append(c)
            last[c.actor] = (c.seq, h)
        except MalformedChange as e:
            try:
                head = change_head(raw, any_version=True)
            except MalformedChange:
                raise ProtocolError("a change in a %s message is not a change (%s)"
                                    % (what, e)) from None
            last[head[0]] = (head[1], h)
            odd.append((head, raw, "%s: %s" % (type(e).__name__, e)))
    return parsed, odd, size, p


def heads_for(items, signer, store):
    """The signed heads a receiver needs for items (as encode_changes takes
    them): one for the top of each actor's chain among them, and below any
    break in it. Own actors' heads are signed here; relayed ones come from
    the HeadStore. Returns (heads, changes no head vouches for)."""
    by = {}
    for it in items:
        if it[4] is not None:
            by.setdefault(it[1], []).append(it)
    heads = []
    unvouched = 0
    for actor, its in by.items():
        its.sort(key=lambda it: it[2], reverse=True)
        own = signer.has(actor)
        anchored = None   # (seq, hash) the change above vouches for, if it is vouched for
        for raw, _, sq, pv, ph, _ in its:
            h = raw[-HASH_LEN:]
            ok = anchored == (sq, h)
            if not ok:
                hd = signer.sign(actor, sq, h) if own else store.get(actor, sq, h)
                if hd is not None:
                    heads.append(hd)
                    ok = True
                else:
                    unvouched += 1
            anchored = (pv, ph) if ok else None
    return heads, unvouched
