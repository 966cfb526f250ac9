"""Two sessions wired by in-memory byte queues."""
from agent.codec import put_varint
from agent.node import Node, init_identity
from agent.sync.frame import encode_frame
from agent.sync.session import CHANGES, Session
from agent.sync.signing import encode_heads
from agent.sync.transport import settle


MADE = []   # nodes make_node opened in the running test (conftest.py closes them)


def make_node(path, **kw):
    init_identity(str(path))
    n = Node(str(path), **kw)
    MADE.append(n)
    return n


def pair(a, b, **kw):
    sa = Session(a, "dev-a", "dev-b", **kw)
    sb = Session(b, "dev-b", "dev-a", **kw)
    sa.start()
    sb.start()
    return sa, sb


def run(sa, sb, rounds=10_000):
    """Shuttle bytes until both are caught up or closed; returns all events."""
    evs = []
    for _ in range(rounds):
        moved = _round(sa, sb)
        evs += sa.events() + sb.events()
        if (sa.caught_up and sb.caught_up) or sa.closed or sb.closed:
            # deliver what is still queued (e.g. a BYE)
            for s, o in ((sa, sb), (sb, sa)):
                data = s.data_to_send()
                if data:
                    settle(o, data)
            evs += sa.events() + sb.events()
            return evs
        if not moved:
            break
    return evs


def shuttle(sa, sb, rounds=200):
    """Shuttle bytes until neither side has any to send (a check's walk
    after both are caught up, which run() would stop at)."""
    for _ in range(rounds):
        if not _round(sa, sb):
            return


def _round(sa, sb):
    """Each side pumps and its bytes go to the other; True if any moved."""
    moved = False
    for s, o in ((sa, sb), (sb, sa)):
        s.pump()
        data = s.data_to_send()
        if data:
            settle(o, data)
            moved = True
    return moved


def state(node):
    return dict(node.scan(""))


def changes_frame(batch, raws, heads=()):
    """A CHANGES frame as a peer would send it: raw changes (hash cut off)
    and the signed heads (agent/sync/signing.py) given."""
    out = bytearray((CHANGES,))
    put_varint(out, batch)
    put_varint(out, len(raws))
    for raw in raws:
        put_varint(out, (len(raw) - 16) << 1)   # prev_hash left in
        out += raw[:-16]
    encode_heads(out, list(heads))
    return encode_frame(out)
