"""Read the ops of a change back into words (for `mycelium watch` and
debugging). The engines do the real parsing; this is for people."""
from ..codec import get_varint, decode_value
from .reference import OP_LWW, OP_CTR, OP_MV, OP_ADD, OP_REM, OP_DEL, OP_ADDC


def describe(change):
    """Yield (key, text) for each op of a parsed Change."""
    buf, p = change.ops, 0
    keys, fields = change.keys, change.fields

    def var():
        nonlocal p
        x, p = get_varint(buf, p)
        return x

    def val():
        nonlocal p
        v, p = decode_value(buf, p)
        return v

    def ctx():
        for _ in range(var()):
            var(), var()

    for _ in range(change.nops):
        key = keys[var()]
        code = buf[p]
        p += 1
        if code == OP_DEL:
            var()
            yield key, "deleted"
            continue
        f = fields[var()]
        if code == OP_LWW:
            var(); var()
            yield key, "%s = %r" % (f, val())
        elif code == OP_CTR:
            var(); var(); pp = var(); nn = var()
            yield key, "%s counter: this actor's total is now %+d" % (f, pp - nn)
        elif code == OP_MV:
            var(); var(); v = val(); ctx()
            yield key, "%s |= %r" % (f, v)
        elif code == OP_ADD or code == OP_ADDC:
            var(); var()
            if code == OP_ADDC:
                var()
            yield key, "%s[] += %r" % (f, val())
        elif code == OP_REM:
            v = val(); ctx()
            yield key, "%s[] -= %r" % (f, v)
        else:
            yield key, "op %d" % code
            return
